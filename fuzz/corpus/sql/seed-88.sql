-- Nexmark q7 (highest bid): the bids with the highest price of every
-- 10-second window. The bid stream is joined with its own windowed maximum:
-- one source read by two scans, a window's end as the join's time bound.
CREATE STREAM q7 AS
SELECT B.auction, B.price, B.bidder, B.date_time, B.extra
FROM bid B
JOIN (SELECT MAX(price) AS maxprice, window_end AS date_time
      FROM bid
      GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)) B1
  ON B.price = B1.maxprice
WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'bid.event.time.field' = 'date_time', 'bid.watermark.max_out_of_orderness' = '0ms',
    'out.type' = 'file_sink', 'out.path' = 'out/q7.jsonl'
);
