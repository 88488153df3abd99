-- values at the edges of 64-bit integers stay inside the engine's rules:
-- a generator over the whole i64 range runs; event times at i64::MIN and
-- i64::MAX are bad records (dead-lettered), not an endless HOP loop or
-- wrapped window bounds; the other records' windows are exact
CREATE STREAM wide AS SELECT MIN(x) < 0 AS neg, MAX(x) > 0 AS pos, COUNT(*) AS n FROM gen INTO a
WITH ('gen.type' = 'datagen', 'gen.rows' = '1000',
      'gen.columns' = 'x:int(-9223372036854775808,9223372036854775807)',
      'a.type' = 'file_sink', 'a.path' = 'out/wide.jsonl');

CREATE STREAM hops AS SELECT k, CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n FROM ev
GROUP BY k, HOP(ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND) INTO b
WITH ('ev.type' = 'file_source', 'ev.path' = 'data/ev.jsonl', 'ev.schema' = 'k VARCHAR, ts BIGINT',
      'ev.event.time.field' = 'ts', 'ev.event.time.format' = 'epoch_millis',
      'b.type' = 'file_sink', 'b.path' = 'out/hops.jsonl',
      'dlq.path' = 'out/dead-{job}.jsonl');

CREATE STREAM tumbles AS SELECT k, CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n FROM ev
GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND) INTO c
WITH ('c.type' = 'file_sink', 'c.path' = 'out/tumbles.jsonl');
