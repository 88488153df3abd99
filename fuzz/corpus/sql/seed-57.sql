SELECT id FROM orders INTO out
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
      'out.type' = 'file_sink', 'out.path' = 'out/a.csv');
