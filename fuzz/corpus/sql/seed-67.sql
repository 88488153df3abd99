SELECT n FROM nums INTO out
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl', 'out.type' = 'file_sink', 'out.path' = 'out/x.jsonl', 'out.rotaton' = 'daily');
