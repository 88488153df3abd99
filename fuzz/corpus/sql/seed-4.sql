SELECT item, amount FROM orders WHERE amount > 100
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl');
