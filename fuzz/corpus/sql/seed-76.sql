-- Nexmark q1 (currency conversion): bid prices from dollars to euros.
CREATE STREAM q1 AS
SELECT auction, bidder, 0.908 * price AS price, date_time, extra
FROM bid
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'out.type' = 'file_sink', 'out.path' = 'out/q1.jsonl'
);
