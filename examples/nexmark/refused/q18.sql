-- An unbounded, paced generator ('rate'): over a bounded input the query runs
-- as one batch epoch and gives the batch answer.
-- Nexmark q18 (last bid per bidder and auction): ROW_NUMBER() OVER
-- (PARTITION BY bidder, auction ORDER BY date_time DESC) = 1. The latest
-- bid of a pair is known only at the end of the input: refused, naming the
-- forms that work (GROUP BY with last_value as an updating result, or per
-- window).
CREATE STREAM q18 AS
SELECT auction, bidder, price, channel, url, date_time, extra FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rank_number
  FROM bid)
WHERE rank_number <= 1
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.rate' = '50000',
    'bid.event.time.field' = 'date_time', 'bid.watermark.max_out_of_orderness' = '0ms',
    'out.type' = 'file_sink', 'out.path' = 'out/q18.jsonl'
);
