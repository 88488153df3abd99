-- Velostream's window clause with a duration literal and no time column (the
-- source's event time is used), HAVING, SESSION_START() and _window_end.
CREATE STREAM sessions AS
SELECT user_id, SESSION_START(ts, INTERVAL '5' SECOND) AS started, _window_end AS ended,
       COUNT(*) AS clicks, COUNT(DISTINCT page) AS pages
FROM clicks
WINDOW SESSION(5s)
GROUP BY user_id
HAVING COUNT(*) > 1
INTO out
WITH ('clicks.type' = 'file_source', 'clicks.path' = 'data/clicks.csv',
      'clicks.event.time.field' = 'ts', 'clicks.event.time.format' = 'epoch_seconds',
      'batch.size' = '2',
      'out.type' = 'file_sink', 'out.path' = 'out/sessions.jsonl');
