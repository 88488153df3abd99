-- Nexmark q12 (processing-time windows): how many bids each bidder makes
-- in each 10 seconds of processing time. A window without an event-time
-- column runs on the wall clock (`velo explain` says so), so which window a
-- bid lands in depends on when it is read: no two runs agree, and there is
-- no batch answer to compare the rows with. What the check does compare:
-- every bid is counted in exactly one window (the counts summed per bidder
-- equal a batch COUNT per bidder: examples/nexmark/batch/q12.sql).
CREATE STREAM q12 AS
SELECT bidder, COUNT(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM bid
GROUP BY bidder
WINDOW TUMBLING(INTERVAL '10' SECOND)
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'out.type' = 'file_sink', 'out.path' = 'out/q12.jsonl'
);
