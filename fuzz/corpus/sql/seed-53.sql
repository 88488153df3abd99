SELECT n FROM nums INTO parts
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      'parts.type' = 'file_sink', 'parts.path' = 'out/{year}/part-{batch_id}.csv', 'batch.size' = '4');
