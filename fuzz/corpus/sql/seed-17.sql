-- refused before anything runs, every one named: two statements with one
-- name, two sinks of two jobs on one file, a sink that would overwrite a
-- source's input, and one dead-letter file for two jobs
CREATE STREAM copy AS SELECT n FROM src INTO a
WITH ('src.type' = 'file_source', 'src.path' = 'data/in.jsonl',
      'a.type' = 'file_sink', 'a.path' = 'out/same.jsonl',
      'dlq.path' = 'out/dead.jsonl');

CREATE STREAM copy AS SELECT n FROM src INTO b
WITH ('b.type' = 'file_sink', 'b.path' = 'out/../out/same.jsonl');

CREATE STREAM overwrite AS SELECT n FROM src INTO c
WITH ('c.type' = 'file_sink', 'c.path' = './data/in.jsonl');
