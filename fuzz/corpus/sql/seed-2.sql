-- LogAndContinue: bad rows are counted, logged with file:line and routed to the DLQ
SELECT id, qty FROM orders INTO out
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.csv',
      'orders.schema' = 'id BIGINT, qty INT',
      'out.type' = 'file_sink', 'out.path' = 'out/good.csv',
      'failure_strategy' = 'LogAndContinue',
      'dlq.path' = 'out/dlq.jsonl');
