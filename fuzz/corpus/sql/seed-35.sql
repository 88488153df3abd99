-- validate checks every value as run reads it, and lists every error:
-- before, these passed validation and run fell back to stdout with exit 0
SELECT n FROM src INTO a, b, c
WITH ('src.type' = 'file_source', 'src.path' = 'data/in.jsonl',
      'a.type' = 'file_sink', 'a.path' = 'out/a.jsonl', 'a.rotation' = 'weekly',
      'b.type' = 'file_sink', 'b.path' = 'out/b.csv', 'b.format' = 'csv', 'b.delimiter' = '::',
      'c.type' = 'file_sink', 'c.path' = 'out/c.jsonl', 'c.encryption' = 'aes256');
