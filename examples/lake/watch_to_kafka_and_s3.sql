-- Seed 004, example 4: file watch to several sinks.
-- CSV files dropped into incoming/ are read as they arrive, sent to Kafka
-- and archived as JSON on S3 under the day's folder; a file is deleted
-- once the epoch that read it is committed on both sinks (never before).
--
-- Needs a Kafka broker (KAFKA_BROKERS) and an S3 store (AWS_* variables).
-- Run: velo run examples/lake/watch_to_kafka_and_s3.sql, then drop files
-- into examples/lake/incoming/ (columns customer_id,amount).
-- Checked by lake::seed_example_4_file_watch_into_kafka_and_s3.
SELECT
  _file_name AS filename,
  _row_number AS row_number,
  customer_id,
  CAST(amount AS DECIMAL(10, 2)) AS amount
FROM incoming
INTO ingestion, 's3://archive/csv-backup/{YYYY}/{MM}/{DD}/*.json'
WITH (
  'incoming.type' = 'file_source',
  'incoming.path' = 'incoming/*.csv',
  'incoming.watch' = 'true',
  'incoming.delete_after_read' = 'true',
  'incoming.metadata_columns' = 'true',
  'incoming.schema' = 'customer_id BIGINT, amount DOUBLE',
  'ingestion.type' = 'kafka_sink',
  'ingestion.bootstrap.servers' = '${KAFKA_BROKERS:-localhost:9092}',
  'ingestion.topic' = 'csv-ingestion',
  'ingestion.value.format' = 'json',
  'batch.timeout' = '${BATCH_TIMEOUT:-5s}'
);
