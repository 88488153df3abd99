-- Seed 004, example 2: S3 to Kafka (batch to stream).
-- Replays a month of stored user events into a live topic at 1000 records
-- a second (rate_limit), keeping only purchases and signups. The Parquet
-- objects are read by ranges: only the columns the query uses.
--
-- Needs an S3 store (AWS_* variables) and a Kafka broker (KAFKA_BROKERS).
-- Run: velo run examples/lake/s3_replay_to_kafka.sql
-- Checked by lake::seed_example_2_s3_replay_into_kafka_at_a_rate.
SELECT
  user_id,
  event_type,
  properties,
  CURRENT_TIMESTAMP AS replay_timestamp
FROM 's3://warehouse/user-events/2024-01/*.parquet'
WHERE event_type IN ('purchase', 'signup')
INTO replayed
WITH (
  'replayed.type' = 'kafka_sink',
  'replayed.bootstrap.servers' = '${KAFKA_BROKERS:-localhost:9092}',
  'replayed.topic' = 'replayed-events',
  'replayed.value.format' = 'json',
  'rate_limit' = '${RATE_LIMIT:-1000}'
);
