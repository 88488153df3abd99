-- batch.enable = false: every batch the source delivers is its own epoch
SELECT n FROM nums INTO out
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl', 'nums.batch_size' = '1',
      'out.type' = 'file_sink', 'out.path' = 'out/n.jsonl', 'batch.enable' = 'false');
