-- one query, three sinks written concurrently; CSV columns follow the SELECT order
CREATE STREAM eu_us AS
SELECT item, id, amount FROM orders WHERE region IN ('eu', 'us') AND amount > 10
INTO csv_out, pq_out, json_out
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
      'csv_out.type' = 'file_sink', 'csv_out.path' = 'out/eu_us.csv',
      'pq_out.type' = 'file_sink', 'pq_out.path' = 'out/eu_us.parquet', 'pq_out.compression' = 'zstd',
      'json_out.type' = 'file_sink', 'json_out.path' = 'out/eu_us.json', 'json_out.format' = 'json');
