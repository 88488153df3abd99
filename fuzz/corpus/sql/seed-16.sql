SELECT * FROM o WITH ('o.type' = 'datagen', 'batch.size' = 'lots');
