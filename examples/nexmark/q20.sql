-- Nexmark q20 (expand bid with auction): every bid on an auction of
-- category 10, with the auction's columns. The standard q20 joins the bid
-- and auction streams without a time bound, whose state would grow
-- forever; as in q3 the join keeps a day of each stream (WITHIN INTERVAL
-- '1' DAY): the same answer, since every bid falls within its auction's
-- open time (at most minutes in the generator's stream).
CREATE STREAM q20 AS
SELECT B.auction, B.bidder, B.price, B.channel, B.url, B.date_time AS bid_time, B.extra AS bid_extra,
       A.item_name, A.description, A.initial_bid, A.reserve, A.date_time AS auction_time, A.expires,
       A.seller, A.category, A.extra AS auction_extra
FROM bid B
JOIN auction A ON B.auction = A.id
WITHIN INTERVAL '1' DAY
WHERE A.category = 10
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'bid.event.time.field' = 'date_time', 'bid.watermark.max_out_of_orderness' = '0ms',
    'auction.type' = 'nexmark', 'auction.table' = 'auction', 'auction.events' = '${NEXMARK_EVENTS:-1000000}',
    'auction.event.time.field' = 'date_time', 'auction.watermark.max_out_of_orderness' = '0ms',
    'out.type' = 'file_sink', 'out.path' = 'out/q20.jsonl'
);
