SELECT id, name FROM events INTO out
WITH ('events.type' = 'file_source', 'events.path' = 'data/events.jsonl', 'events.schema' = 'id BIGINT, name VARCHAR',
      'out.type' = 'file_sink', 'out.path' = 'out/ok.jsonl',
      'dlq.type' = 'file_sink', 'dlq.path' = 'out/dead.jsonl', 'dlq.format' = 'jsonl');
