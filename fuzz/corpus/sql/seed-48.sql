-- format 'json' reads JSON Lines as well as arrays (detected from the first byte)
SELECT n FROM nums WHERE n > 8 INTO out
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.json', 'nums.format' = 'json',
      'out.type' = 'file_sink', 'out.path' = 'out/n.csv', 'out.rotation' = 'daily');
