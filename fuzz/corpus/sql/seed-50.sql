-- the stream (orders) probes a bounded lookup table (customers) loaded once
CREATE STREAM enriched AS
SELECT o.order_id, o.amount, c.name AS customer, COALESCE(c.tier, 'UNKNOWN') AS tier
FROM orders o
LEFT JOIN customers c ON o.customer_id = c.id
WHERE o.amount > 80
INTO out
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
      'customers.type' = 'file_source', 'customers.path' = 'data/customers.csv',
      'out.type' = 'file_sink', 'out.path' = 'out/enriched.csv', 'batch.size' = '2');
