-- An unbounded, paced generator ('rate'): over a bounded input the query runs
-- as one batch epoch and gives the batch answer.
-- Nexmark q19 (auction top-10 price): the ten highest bids of every
-- auction over all time, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY
-- price DESC) <= 10. Over a stream a bid's rank would be given when it
-- arrives and a later bid may outrank it: refused, naming the forms that
-- work (top-N per window over a windowed GROUP BY).
CREATE STREAM q19 AS
SELECT * FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number
  FROM bid)
WHERE rank_number <= 10
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.rate' = '50000',
    'bid.event.time.field' = 'date_time', 'bid.watermark.max_out_of_orderness' = '0ms',
    'out.type' = 'file_sink', 'out.path' = 'out/q19.jsonl'
);
