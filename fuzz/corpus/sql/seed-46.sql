INSERT INTO archive SELECT id, amount FROM orders WHERE amount < 50
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
      'archive.type' = 'file_sink', 'archive.path' = 'out/small.jsonl');
