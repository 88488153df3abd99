-- this SQL file starts with a UTF-8 byte-order mark, as Windows editors write it;
-- the CSV input has old Mac line endings (CR alone) and a BOM too: every row is read
SELECT id, name FROM people INTO out
WITH ('people.type' = 'file_source', 'people.path' = 'data/people.csv',
      'out.type' = 'file_sink', 'out.path' = 'out/people.jsonl');
