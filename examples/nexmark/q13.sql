-- Nexmark q13 (bounded side input join): every bid with the value of its
-- auction's entry in a side table (side_input.csv beside this file: 10,000
-- keys). The side table is bounded and has no event time, so it is a
-- lookup table: loaded once (reloaded every `side_input.refresh_interval`
-- when set), and each bid is joined with it as it arrives.
CREATE STREAM q13 AS
SELECT B.auction, B.bidder, B.price, B.date_time, S.value
FROM bid B
JOIN side_input S ON B.auction % 10000 = S.key
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'side_input.type' = 'file_source', 'side_input.path' = 'side_input.csv', 'side_input.format' = 'csv',
    'out.type' = 'file_sink', 'out.path' = 'out/q13.jsonl'
);
