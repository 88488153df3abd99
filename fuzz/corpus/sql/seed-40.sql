-- a source declared with a DDL column list, and one with a schema key
CREATE STREAM readings (sensor VARCHAR, value DOUBLE, ok BOOLEAN)
WITH ('readings.type' = 'file_source', 'readings.path' = 'data/readings.csv', 'readings.has_headers' = 'false');

CREATE STREAM good AS
SELECT r.sensor, r.value + 0.5 AS adjusted FROM readings r WHERE r.ok
INTO out
WITH ('out.type' = 'file_sink', 'out.path' = 'out/good.jsonl');
