-- FailBatch: the first row whose expression fails stops the job; nothing of
-- its epoch is published (the epoch before it is)
SELECT a, 100 / b AS q FROM nums INTO out
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.csv',
      'out.type' = 'file_sink', 'out.path' = 'out/q.jsonl',
      'failure_strategy' = 'FailBatch', 'batch.size' = '2');
