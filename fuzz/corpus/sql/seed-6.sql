SELECT n FROM nums INTO out
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      'out.type' = 'file_sink', 'out.path' = 'out/all.jsonl', 'batch.strategy' = 'adaptive_size', 'batch.min_size' = '2', 'batch.adaptive_max_size' = '3', 'batch.target_latency' = '10s');
