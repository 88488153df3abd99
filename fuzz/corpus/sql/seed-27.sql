SELECT * FROM o WITH ('o.type' = 'file_source', 'o.path' = 'data/*.csv');
