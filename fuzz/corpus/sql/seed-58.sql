-- every sink fails to be created (its directory is a regular file): results go to stdout
SELECT n FROM nums WHERE n = 2 INTO broken1, broken2
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      'broken1.type' = 'file_sink', 'broken1.path' = 'blocker/a.jsonl',
      'broken2.type' = 'file_sink', 'broken2.path' = 'blocker/b.jsonl');
