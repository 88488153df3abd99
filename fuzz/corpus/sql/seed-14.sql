-- '{job}' in a path stands for the job's name: the application-wide
-- dead-letter keys give each job a file of its own
CREATE STREAM one AS SELECT n FROM src INTO a
WITH ('src.type' = 'file_source', 'src.path' = 'data/in.jsonl', 'src.schema' = 'n VARCHAR',
      'a.type' = 'file_sink', 'a.path' = 'out/one.jsonl',
      'dlq.path' = 'out/dead-{job}.jsonl');

CREATE STREAM two AS SELECT n FROM src INTO b
WITH ('b.type' = 'file_sink', 'b.path' = 'out/two.jsonl');
