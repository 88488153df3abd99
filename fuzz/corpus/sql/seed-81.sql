-- Nexmark q2 (selection): the bids on a set of auctions (every 123rd id).
CREATE STREAM q2 AS
SELECT auction, price
FROM bid
WHERE auction % 123 = 0
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'out.type' = 'file_sink', 'out.path' = 'out/q2.jsonl'
);
