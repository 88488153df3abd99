SELECT n FROM nums INTO out
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      'out.type' = 'file_sink', 'out.path' = 'out/all.jsonl', 'batch.strategy' = 'memory_based', 'batch.memory_size' = '1', 'nums.batch_size' = '2');
