-- a windowed GROUP BY in two partitions: the scan is read by both, so the
-- hash routing runs on both cores
CREATE STREAM per_key AS
SELECT key, window_start, COUNT(*) AS n FROM gen
GROUP BY key, TUMBLE(ts, INTERVAL '1' SECOND)
INTO out
WITH ('gen.type' = 'datagen', 'gen.rows' = '1000',
      'gen.columns' = 'key:int(0,9), ts:timestamp(1)',
      'gen.event.time.field' = 'ts', 'partitions' = '2',
      'out.type' = 'stdout');
