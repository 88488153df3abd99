-- Nexmark q6 (average selling price by seller): for every closed auction,
-- the average closing price of its seller's last 11 auctions (this one and
-- the 10 before). An auction's closing price is its highest bid placed
-- while it was open. The auctions of the generator close at most 20 s after
-- they open: the bids are an interval join of 20 s, and the closing prices
-- a window of 1 s on the auction's open time (every auction is in one such
-- window, which closes once no bid for its auctions can still come). The
-- average is a row window over the closed auctions of a seller, in the
-- order they opened.
CREATE STREAM q6 AS
SELECT Q.seller, Q.id, Q.final,
       AVG(Q.final) OVER (PARTITION BY Q.seller ORDER BY Q.date_time, Q.id
                          ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_final
FROM (SELECT A.id, A.seller, MIN(A.date_time) AS date_time, MAX(B.price) AS final
      FROM auction A
      JOIN bid B
        ON A.id = B.auction
       AND B.date_time BETWEEN A.date_time AND A.expires
       AND B.date_time <= A.date_time + INTERVAL '20' SECOND
      GROUP BY A.id, A.seller, TUMBLE(A.date_time, INTERVAL '1' SECOND)) Q
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'bid.event.time.field' = 'date_time', 'bid.watermark.max_out_of_orderness' = '0ms',
    'auction.type' = 'nexmark', 'auction.table' = 'auction', 'auction.events' = '${NEXMARK_EVENTS:-1000000}',
    'auction.event.time.field' = 'date_time', 'auction.watermark.max_out_of_orderness' = '0ms',
    'out.type' = 'file_sink', 'out.path' = 'out/q6.jsonl'
);
