-- a generated sequence that would pass the largest 64-bit integer stops the
-- job with what to change (before: a panic in the source thread, reported
-- as "0 records read", exit 0)
SELECT id FROM gen INTO out
WITH ('gen.type' = 'datagen', 'gen.rows' = '100', 'gen.columns' = 'id:sequence(9223372036854775800)',
      'out.type' = 'stdout');
