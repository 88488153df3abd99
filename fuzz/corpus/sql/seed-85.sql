-- Nexmark q4 (average price per category): the average closing price of
-- the auctions of each category, updated as auctions close. An auction's
-- closing price is its highest bid placed while it was open (as in q6: an
-- interval join of 20 s, then a window of 1 s on the auction's open time,
-- which closes once no bid for its auctions can still come). The average
-- per category is a GROUP BY without a window over those closed auctions:
-- an updating result, one row per category and epoch that changed it
-- (`_op` insert/update; as a Kafka sink, the message key is the category).
CREATE STREAM q4 AS
SELECT Q.category, AVG(Q.final) AS avg_final
FROM (SELECT A.id, A.category, MAX(B.price) AS final
      FROM auction A
      JOIN bid B
        ON A.id = B.auction
       AND B.date_time BETWEEN A.date_time AND A.expires
       AND B.date_time <= A.date_time + INTERVAL '20' SECOND
      GROUP BY A.id, A.category, TUMBLE(A.date_time, INTERVAL '1' SECOND)) Q
GROUP BY Q.category
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'bid.event.time.field' = 'date_time', 'bid.watermark.max_out_of_orderness' = '0ms',
    'auction.type' = 'nexmark', 'auction.table' = 'auction', 'auction.events' = '${NEXMARK_EVENTS:-1000000}',
    'auction.event.time.field' = 'date_time', 'auction.watermark.max_out_of_orderness' = '0ms',
    'out.type' = 'file_sink', 'out.path' = 'out/q4.jsonl'
);
