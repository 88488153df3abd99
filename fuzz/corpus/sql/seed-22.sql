SELECT * FROM o INTO w WITH ('o.type' = 'datagen', 'w.type' = 'file_sink', 'w.config_file' = 'w.yaml');
