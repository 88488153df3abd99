SELECT * FROM o INTO w WITH ('o.type' = 'datagen', 'w.type' = 'warehouse_sink');
