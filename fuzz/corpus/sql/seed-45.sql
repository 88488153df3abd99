SELECT k, v FROM parts INTO out
WITH ('parts.type' = 'file_source', 'parts.path' = 'data/part-*.jsonl.*', 'parts.format' = 'jsonl',
      'out.type' = 'file_sink', 'out.path' = 'out/all.csv');
