-- no INTO: the stream's own name is the sink when it has a sink type
CREATE STREAM summary AS SELECT id FROM orders WHERE region = 'apac'
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
      'summary.type' = 'file_sink', 'summary.path' = 'out/summary.csv');

-- ... and stdout, with a warning, when it has none
CREATE STREAM loose AS SELECT id * 100 AS hundredfold FROM orders WHERE region = 'apac';
