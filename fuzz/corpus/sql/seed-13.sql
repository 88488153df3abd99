-- the generator: same seed, same rows
SELECT id, bucket, price, color, flag FROM gen WHERE id <= 5 INTO out
WITH ('gen.type' = 'datagen', 'gen.rows' = '20', 'gen.seed' = '3',
      'gen.columns' = 'id:sequence(1), bucket:int(1,3), price:float(10,20), color:oneof(red|green), flag:bool',
      'out.type' = 'file_sink', 'out.path' = 'out/gen.jsonl');
