-- Nexmark q21 (add a channel id): the channel's id, from its name for the
-- known channels and from the URL's channel_id parameter otherwise.
CREATE STREAM q21 AS
SELECT auction, bidder, price, channel,
       CASE
           WHEN lower(channel) = 'apple' THEN '0'
           WHEN lower(channel) = 'google' THEN '1'
           WHEN lower(channel) = 'facebook' THEN '2'
           WHEN lower(channel) = 'baidu' THEN '3'
           ELSE split_part(split_part(url, 'channel_id=', 2), '&', 1)
       END AS channel_id
FROM bid
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'out.type' = 'file_sink', 'out.path' = 'out/q21.jsonl'
);
