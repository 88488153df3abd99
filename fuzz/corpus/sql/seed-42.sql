-- FailBatch: the job stops at the bad record; its epoch is not published, earlier epochs are
SELECT id FROM events INTO out
WITH ('events.type' = 'file_source', 'events.path' = 'data/events.jsonl',
      'out.type' = 'file_sink', 'out.path' = 'out/ids.jsonl',
      'failure_strategy' = 'FailBatch', 'batch.size' = '3');
