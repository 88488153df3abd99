-- use_transactions: each epoch is written to a hidden temporary file and renamed at commit
SELECT n FROM nums INTO tx
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      'tx.type' = 'file_sink', 'tx.path' = 'out/tx.jsonl',
      'use_transactions' = 'true', 'batch.size' = '5');
