-- @application: enrich_orders
-- Bundled sample data: orders (JSON Lines, the stream) enriched with customers (CSV, a lookup table),
-- written to Parquet and CSV at once.
CREATE STREAM enriched_orders AS
SELECT o.order_id, o.amount, c.name AS customer, COALESCE(c.tier, 'UNKNOWN') AS tier
FROM orders o
LEFT JOIN customers c ON o.customer_id = c.id
WHERE o.amount > 80
INTO lake, report
WITH (
    'orders.type' = 'file_source',
    'orders.path' = 'data/orders.jsonl',
    'customers.type' = 'file_source',
    'customers.path' = 'data/customers.csv',
    'lake.type' = 'file_sink',
    'lake.path' = 'out/enriched_orders.parquet',
    'lake.compression' = 'zstd',
    'report.type' = 'file_sink',
    'report.path' = 'out/enriched_orders.csv'
);
