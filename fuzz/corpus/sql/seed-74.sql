-- Not one of the numbered Nexmark queries: an interval join of the two
-- biggest Nexmark streams, every bid placed while its auction is open, with
-- the auction's category and reserve. The auctions of the generator close at
-- most 20 s after they open, which the second bound says, so the join keeps
-- about 20 s of auctions and nothing more.
CREATE STREAM j1 AS
SELECT B.auction, B.bidder, B.price, A.category, A.reserve
FROM bid B
JOIN auction A
  ON B.auction = A.id
 AND B.date_time BETWEEN A.date_time AND A.expires
 AND B.date_time <= A.date_time + INTERVAL '20' SECOND
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'bid.event.time.field' = 'date_time', 'bid.watermark.max_out_of_orderness' = '0ms',
    'auction.type' = 'nexmark', 'auction.table' = 'auction', 'auction.events' = '${NEXMARK_EVENTS:-1000000}',
    'auction.event.time.field' = 'date_time', 'auction.watermark.max_out_of_orderness' = '0ms',
    'out.type' = 'file_sink', 'out.path' = 'out/j1.jsonl'
);
