SELECT _row_number, id, _file_name LIKE '%events.jsonl' AS from_events FROM events
INTO out
WITH ('events.type' = 'file_source', 'events.path' = 'data/events.jsonl',
      'events.schema' = 'id BIGINT NOT NULL, label VARCHAR',
      'events.metadata_columns' = 'true',
      'out.type' = 'file_sink', 'out.path' = 'out/rows.csv');
