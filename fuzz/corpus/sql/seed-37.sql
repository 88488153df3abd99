-- LogAndContinue: an expression that fails on some rows (a zero divisor, a
-- failed CAST, an invalid regular expression, an unprintable timestamp)
-- affects only those rows: they go to the dead-letter file with the error,
-- every other row is written, in order, and the run exits 0. In aggregate
-- arguments too (SUM(100 / b)).
SELECT a, 100 / b AS q, CAST(c AS INT) AS n FROM nums WHERE regexp_like(c, p) OR a > 0 INTO out
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.csv',
      'out.type' = 'file_sink', 'out.path' = 'out/q.jsonl',
      'dlq.path' = 'out/dead-{job}.jsonl', 'batch.size' = '4');

CREATE STREAM totals AS SELECT a % 2 AS k, SUM(100 / b) AS s, COUNT(*) AS n FROM nums GROUP BY a % 2 EMIT FINAL INTO tot
WITH ('tot.type' = 'file_sink', 'tot.path' = 'out/totals.jsonl');

CREATE STREAM stamps AS SELECT a, to_timestamp_seconds(t) AS ts FROM nums INTO st
WITH ('st.type' = 'file_sink', 'st.path' = 'out/stamps.jsonl');
