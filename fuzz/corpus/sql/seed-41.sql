-- FailBatch: a sink that cannot write stops the job; the epoch is aborted on every sink
SELECT n FROM nums INTO blocked, other
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      'blocked.type' = 'file_sink', 'blocked.path' = 'out/b/{batch_id}.jsonl',
      'other.type' = 'file_sink', 'other.path' = 'out/other.jsonl',
      'failure_strategy' = 'FailBatch', 'batch.size' = '4');
