-- Nexmark q3 (local item suggestion): the auctions of category 10 by
-- sellers in Oregon, Idaho or California, with the seller's name and city.
-- The standard q3 is a join of the person and auction streams without a
-- time bound, whose state would grow forever; here the join keeps a day of
-- each stream (WITHIN INTERVAL '1' DAY, a state retention in event time),
-- the same answer for every auction listed within a day of its seller's
-- registration (all of them in the generator's stream, which spans minutes).
CREATE STREAM q3 AS
SELECT P.name, P.city, P.state, A.id
FROM auction A
JOIN person P ON A.seller = P.id
WITHIN INTERVAL '1' DAY
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')
INTO out
WITH (
    'auction.type' = 'nexmark', 'auction.table' = 'auction', 'auction.events' = '${NEXMARK_EVENTS:-1000000}',
    'auction.event.time.field' = 'date_time', 'auction.watermark.max_out_of_orderness' = '0ms',
    'person.type' = 'nexmark', 'person.table' = 'person', 'person.events' = '${NEXMARK_EVENTS:-1000000}',
    'person.event.time.field' = 'date_time', 'person.watermark.max_out_of_orderness' = '0ms',
    'out.type' = 'file_sink', 'out.path' = 'out/q3.jsonl'
);
