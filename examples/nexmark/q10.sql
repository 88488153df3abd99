-- Nexmark q10 (log to file system): every bid with its date and its
-- minute of the day as text, for a file layout partitioned by them. The
-- path may use the columns' values of the bid's time through the file
-- sink's templates; here one file, for the check against the batch answer.
CREATE STREAM q10 AS
SELECT auction, bidder, price, date_time, extra,
       to_char(date_time, '%Y-%m-%d') AS dt, to_char(date_time, '%H:%M') AS hm
FROM bid
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'out.type' = 'file_sink', 'out.path' = 'out/q10.jsonl'
);
