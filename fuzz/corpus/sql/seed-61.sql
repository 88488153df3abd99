-- use_transactions: one sink failing aborts the epoch on every sink; LogAndContinue goes on, and the run does not exit 0 (records were lost)
SELECT n FROM nums INTO t1, t2
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      't1.type' = 'file_sink', 't1.path' = 'out/t1/{batch_id}.jsonl',
      't2.type' = 'file_sink', 't2.path' = 'out/t2.jsonl',
      'use_transactions' = 'true', 'batch.size' = '4');
