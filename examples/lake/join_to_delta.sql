-- Seed 004, example 5: a multi-source join into Delta Lake.
-- Orders from Kafka enriched with customer history kept as Parquet on S3
-- (a lookup table, read again every 10 minutes), the large ones appended to
-- a Delta table on S3: one Delta commit per epoch, stamped with the job and
-- epoch (use_transactions), so a restart neither loses nor repeats one.
-- and with the current stock of an Iceberg table (a SQL catalog in a
-- SQLite file, the table's data on S3; read again every 10 minutes).
--
-- Needs a Kafka broker (KAFKA_BROKERS, default localhost:9092) and an S3
-- store (the standard AWS_* variables; AWS_ENDPOINT_URL for MinIO, moto or
-- SeaweedFS), with the Iceberg catalog at ICEBERG_CATALOG (default
-- sqlite:catalog.db next to this file). Run: velo run examples/lake/join_to_delta.sql
-- Checked by delta::seed_example_5_kafka_joined_with_s3_into_delta.
CREATE STREAM enriched_orders AS
SELECT
  k.order_id,
  k.customer_id,
  k.amount,
  h.customer_segment,
  h.lifetime_value,
  i.current_inventory
FROM orders k
LEFT JOIN customers h
  ON k.customer_id = h.customer_id
LEFT JOIN inventory i
  ON k.product_id = i.product_id
WHERE k.amount > 500.00
INTO 'delta://s3://lakehouse/enriched_orders/?mode=append&optimize_write=true'
WITH (
  'orders.type' = 'kafka_source',
  'orders.bootstrap.servers' = '${KAFKA_BROKERS:-localhost:9092}',
  'orders.topic' = 'orders',
  'orders.group.id' = 'velo-delta-example',
  'orders.auto.offset.reset' = 'earliest',
  'orders.value.format' = 'json',
  'orders.schema' = 'order_id BIGINT, customer_id BIGINT, product_id BIGINT, amount DOUBLE',
  'customers.type' = 's3_source',
  'customers.path' = 's3://warehouse/customers/*.parquet',
  'customers.refresh_interval' = '10m',
  'inventory.type' = 'iceberg_source',
  'inventory.table' = 'catalog.inventory.current_stock',
  'inventory.catalog_uri' = '${ICEBERG_CATALOG:-sqlite:catalog.db}',
  'inventory.warehouse' = '${ICEBERG_WAREHOUSE:-s3://warehouse/iceberg}',
  'inventory.refresh_interval' = '10m',
  'batch.timeout' = '${BATCH_TIMEOUT:-30s}',
  'use_transactions' = 'true'
);
