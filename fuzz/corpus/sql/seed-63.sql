SELECT n FROM nums WHERE n = 1 INTO f, console
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      'f.type' = 'file_sink', 'f.path' = 'out/f.jsonl', 'console.type' = 'stdout', 'console.format' = 'jsonl',
      'use_transactions' = 'true');
