SELECT * FROM o INTO processed WITH ('o.type' = 'datagen', 'processed.path' = 'x');
