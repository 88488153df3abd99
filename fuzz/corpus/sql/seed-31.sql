SELECT nosuch FROM o WITH ('o.type' = 'datagen');
