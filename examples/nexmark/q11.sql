-- Nexmark q11 (user sessions): how many bids each bidder makes in each of
-- their sessions, a session ending after 10 seconds without a bid. A
-- session window on event time: a session is written once the watermark
-- has passed its end (last bid + 10 s), equal to the batch answer (the
-- check's batch form is examples/nexmark/batch/q11.sql).
CREATE STREAM q11 AS
SELECT bidder, COUNT(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM bid
GROUP BY bidder, SESSION(date_time, INTERVAL '10' SECOND)
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'bid.event.time.field' = 'date_time', 'bid.watermark.max_out_of_orderness' = '0ms',
    'out.type' = 'file_sink', 'out.path' = 'out/q11.jsonl'
);
