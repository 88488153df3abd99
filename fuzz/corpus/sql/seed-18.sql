-- every write of the only sink fails (a directory stands where its file
-- goes): the records are counted as failed and the run does not exit 0
SELECT n FROM nums INTO out
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      'out.type' = 'file_sink', 'out.path' = 'blocked/{batch_id}', 'out.format' = 'jsonl');
