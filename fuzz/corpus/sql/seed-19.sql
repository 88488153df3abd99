SELECT * FROM o WITH ('o.type' = 'file_source', 'o.config_file' = 'a.yaml');
