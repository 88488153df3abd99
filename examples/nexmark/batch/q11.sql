WITH s AS (
  SELECT bidder, date_time,
         CASE WHEN date_time - LAG(date_time) OVER (PARTITION BY bidder ORDER BY date_time) < INTERVAL '10 seconds'
              THEN 0 ELSE 1 END AS fresh
  FROM bid),
n AS (
  SELECT bidder, date_time,
         SUM(fresh) OVER (PARTITION BY bidder ORDER BY date_time ROWS UNBOUNDED PRECEDING) AS sid
  FROM s)
SELECT bidder, COUNT(*) AS bid_count, MIN(date_time) AS starttime,
       MAX(date_time) + INTERVAL '10 seconds' AS endtime
FROM n GROUP BY bidder, sid
