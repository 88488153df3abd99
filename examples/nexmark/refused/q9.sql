-- An unbounded, paced generator ('rate'): over a bounded input the query runs
-- as one batch epoch and gives the batch answer.
-- Nexmark q9 (winning bids): each auction's highest bid placed while it was
-- open, ranked with ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price
-- DESC). On a stream that ranking would be given to each bid as it
-- arrives, and a later bid may rank before it: refused with what to write
-- instead. q4 and q6 compute the winning price as a window on the
-- auction's open time (MAX(price) once no bid can still come).
CREATE STREAM open_bids AS
SELECT A.id, A.item_name, A.seller, A.category, B.price, B.bidder, B.date_time AS bid_time
FROM auction A JOIN bid B ON A.id = B.auction
WITHIN INTERVAL '1' DAY
WHERE B.date_time BETWEEN A.date_time AND A.expires;

CREATE STREAM q9 AS
SELECT id, item_name, seller, category, price, bidder, bid_time FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY price DESC, bid_time) AS rownum
  FROM open_bids)
WHERE rownum <= 1
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.rate' = '50000',
    'bid.event.time.field' = 'date_time', 'bid.watermark.max_out_of_orderness' = '0ms',
    'auction.type' = 'nexmark', 'auction.table' = 'auction', 'auction.rate' = '50000',
    'auction.event.time.field' = 'date_time', 'auction.watermark.max_out_of_orderness' = '0ms',
    'out.type' = 'file_sink', 'out.path' = 'out/q9.jsonl'
);
