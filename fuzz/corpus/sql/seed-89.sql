-- Nexmark q8 (monitor new users): people who created an account and
-- opened an auction in the same 10-second window. A join of two windowed
-- streams: each window closes when the watermark passes its end, and the
-- join pairs windows with the same start.
CREATE STREAM q8 AS
SELECT P.id, P.name, P.starttime
FROM (SELECT id, name, window_start AS starttime
      FROM person
      GROUP BY id, name, TUMBLE(date_time, INTERVAL '10' SECOND)) P
JOIN (SELECT seller, window_start AS starttime
      FROM auction
      GROUP BY seller, TUMBLE(date_time, INTERVAL '10' SECOND)) A
ON P.id = A.seller AND P.starttime = A.starttime
INTO out
WITH (
    'person.type' = 'nexmark', 'person.table' = 'person', 'person.events' = '${NEXMARK_EVENTS:-1000000}',
    'person.event.time.field' = 'date_time', 'person.watermark.max_out_of_orderness' = '0ms',
    'auction.type' = 'nexmark', 'auction.table' = 'auction', 'auction.events' = '${NEXMARK_EVENTS:-1000000}',
    'auction.event.time.field' = 'date_time', 'auction.watermark.max_out_of_orderness' = '0ms',
    'out.type' = 'file_sink', 'out.path' = 'out/q8.jsonl'
);
