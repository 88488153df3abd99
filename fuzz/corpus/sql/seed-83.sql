-- Nexmark q22 (get URL directories): the first three path segments of
-- every bid's URL.
CREATE STREAM q22 AS
SELECT auction, bidder, price, channel,
       split_part(url, '/', 4) AS dir1,
       split_part(url, '/', 5) AS dir2,
       split_part(url, '/', 6) AS dir3
FROM bid
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'out.type' = 'file_sink', 'out.path' = 'out/q22.jsonl'
);
