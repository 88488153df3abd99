SELECT n FROM nums INTO out
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      'out.type' = 'file_sink', 'out.path' = 'out/all.jsonl', 'batch.strategy' = 'low_latency', 'batch.low_latency_max_size' = '3', 'batch.eager_processing' = 'false', 'batch.low_latency_wait' = '1s');
