SELECT n FROM nums WHERE n = 2 INTO broken, fine
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      'broken.type' = 'file_sink', 'broken.path' = 'blocker/a.jsonl',
      'fine.type' = 'file_sink', 'fine.path' = 'out/fine.jsonl');
