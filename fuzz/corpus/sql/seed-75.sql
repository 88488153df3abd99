-- Nexmark q0 (pass-through): every bid, unchanged. Measures the cost of
-- reading and writing. `velo run examples/nexmark/q0.sql`; the benchmark
-- (benches/nexmark.rs) runs it with 'out.type' = 'blackhole'.
CREATE STREAM q0 AS
SELECT auction, bidder, price, date_time, extra
FROM bid
INTO out
WITH (
    'bid.type' = 'nexmark', 'bid.table' = 'bid', 'bid.events' = '${NEXMARK_EVENTS:-1000000}',
    'out.type' = 'file_sink', 'out.path' = 'out/q0.jsonl'
);
