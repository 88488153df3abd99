-- Seed 004, example 1: Kafka to a data lake (stream to batch).
-- High-value transactions from a Kafka topic into Parquet objects on S3,
-- partitioned by day (Hive directories date=2024-01-02/), one Kafka-offset
-- checkpoint and one set of objects per epoch: with use_transactions a
-- reader of the prefix sees only whole epochs, and a restart neither loses
-- nor repeats one.
--
-- Needs a Kafka broker (KAFKA_BROKERS, default localhost:9092) and an S3
-- store (the standard AWS_* variables; AWS_ENDPOINT_URL for MinIO, moto or
-- SeaweedFS). Run: velo run examples/lake/kafka_to_s3.sql
-- Checked by lake::seed_example_1_kafka_to_s3_parquet_partitioned_by_date.
CREATE STREAM high_value AS
SELECT
  customer_id,
  transaction_id,
  amount,
  "timestamp",
  CAST(CAST(to_timestamp_millis("timestamp") AS DATE) AS VARCHAR) AS "date"
FROM transactions
WHERE amount > 100.00
INTO 's3://data-lake/high-value-transactions/?format=parquet&compression=snappy&partition_by=date'
WITH (
  'transactions.type' = 'kafka_source',
  'transactions.bootstrap.servers' = '${KAFKA_BROKERS:-localhost:9092}',
  'transactions.topic' = 'transactions',
  'transactions.group.id' = 'velo-lake-example',
  'transactions.auto.offset.reset' = 'earliest',
  'transactions.value.format' = 'json',
  'transactions.schema' = 'customer_id BIGINT, transaction_id BIGINT, amount DOUBLE, "timestamp" BIGINT',
  'batch.size' = '10000',
  'batch.timeout' = '${BATCH_TIMEOUT:-5 minutes}',
  'use_transactions' = 'true'
);
