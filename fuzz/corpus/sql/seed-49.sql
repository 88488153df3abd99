-- LIMIT over a bounded input answers once, even though it stops reading early
SELECT n FROM nums LIMIT 2 INTO out
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl', 'nums.batch_size' = '1',
      'out.type' = 'file_sink', 'out.path' = 'out/first.jsonl');
