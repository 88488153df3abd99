SELECT * FROM o WITH ('o.type' = 'file_sink', 'o.path' = 'x');
