-- Tumbling event-time windows: out-of-order records within 2 s are counted,
-- later ones are dead-lettered; each window is emitted once.
CREATE STREAM per_key AS
SELECT k, window_start, window_end, COUNT(*) AS n, SUM(v) AS total
FROM events
GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)
INTO out
WITH ('events.type' = 'file_source', 'events.path' = 'data/events.jsonl',
      'events.schema' = 'k VARCHAR, v BIGINT, ts VARCHAR',
      'events.event.time.field' = 'ts', 'events.event.time.format' = 'iso8601',
      'events.watermark.max_out_of_orderness' = '2s',
      'events.late.data.strategy' = 'dead_letter',
      'batch.size' = '2',
      -- one partition: the rows of a window come out in one order
      'partitions' = '1',
      'out.type' = 'file_sink', 'out.path' = 'out/windows.jsonl',
      'dlq.type' = 'file_sink', 'dlq.path' = 'out/late.jsonl');
