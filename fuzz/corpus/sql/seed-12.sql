-- CSV with a custom delimiter and quoted fields -> filter/project -> JSON Lines
CREATE STREAM big AS
SELECT order_id, upper(customer) AS customer, amount * 2 AS doubled, note
FROM orders
WHERE amount > 50
INTO out_sink
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.csv', 'orders.format' = 'csv',
      'orders.delimiter' = ';', 'orders.has_headers' = 'true',
      'out_sink.type' = 'file_sink', 'out_sink.path' = 'out/big.jsonl', 'out_sink.format' = 'jsonl');
