-- a bounded input with GROUP BY runs as one epoch and gives the batch answer
CREATE TABLE totals AS
SELECT region, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY region ORDER BY region
INTO out
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
      'out.type' = 'file_sink', 'out.path' = 'out/totals.csv', 'batch.size' = '2');
