-- a UTF-16 file is refused with its encoding named and how to convert it
SELECT id, name FROM people INTO out
WITH ('people.type' = 'file_source', 'people.path' = 'data/people.csv', 'out.type' = 'stdout');
