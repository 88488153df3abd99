-- Nexmark q5 (hot items): the auctions with the most bids in every
-- 10-second window sliding by 2 seconds. The maximum per window is a
-- tumbling 2-second window over the counts' window starts (each start is a
-- multiple of the slide, so it holds exactly one sliding window); it closes
-- when the counts of its window are all out, and the counts are joined with
-- it on the window start.
CREATE STREAM q5 AS
SELECT AuctionBids.auction, AuctionBids.num, AuctionBids.starttime
FROM (SELECT auction, COUNT(*) AS num, window_start AS starttime
      FROM bid
      GROUP BY auction, HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)) AuctionBids
JOIN (SELECT MAX(CountBids.num) AS maxn, window_start AS starttime
      FROM (SELECT COUNT(*) AS num, window_start AS starttime
            FROM bid
            GROUP BY auction, HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)) CountBids
      GROUP BY TUMBLE(CountBids.starttime, INTERVAL '2' SECOND)) MaxBids
  ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.num >= MaxBids.maxn
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'bid.event.time.field' = 'date_time', 'bid.watermark.max_out_of_orderness' = '0ms',
    'out.type' = 'file_sink', 'out.path' = 'out/q5.jsonl'
);
