SELECT n, 'padding-padding-padding-padding' AS pad FROM nums INTO rolled
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      'rolled.type' = 'file_sink', 'rolled.path' = 'out/rolled.jsonl',
      'rolled.rotation' = 'size:90B', 'rolled.max_files' = '2', 'batch.size' = '2');
