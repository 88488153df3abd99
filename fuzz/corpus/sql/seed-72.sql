-- Kafka in, Kafka and files out (needs a broker: `docker compose up -d` at the
-- repository root starts Apache Kafka and a schema registry).
--
-- Feed it with any client, e.g.
--   echo '{"order_id":1,"customer_id":7,"amount":250.0,"status":"PAID"}' | \
--     kcat -P -b localhost:9092 -t orders
-- and read the result with
--   kcat -C -b localhost:9092 -t big_orders -s value=avro -r http://localhost:8081
--
-- Offsets are committed to the group 'velo-examples' only after both sinks
-- have the epoch (at-least-once); set 'use_transactions' = 'true' for one
-- Kafka transaction per epoch plus atomically published files.
CREATE STREAM big_orders AS
SELECT order_id, customer_id, amount, status, _partition, _offset
FROM orders
WHERE amount > 100
INTO big_orders_topic, big_orders_files
WITH (
  'orders.type' = 'kafka_source',
  'orders.config_file' = 'configs/orders_source.yaml',
  'orders.metadata_columns' = 'true',
  'orders.schema' = 'order_id BIGINT, customer_id BIGINT, amount DOUBLE, status VARCHAR',

  'big_orders_topic.type' = 'kafka_sink',
  'big_orders_topic.config_file' = 'configs/kafka_base.yaml',
  'big_orders_topic.topic' = 'big_orders',
  'big_orders_topic.value.format' = 'avro',
  'big_orders_topic.key.field' = 'customer_id',
  'big_orders_topic.linger.ms' = '5',
  'big_orders_topic.compression.type' = 'lz4',

  'big_orders_files.type' = 'file_sink',
  'big_orders_files.path' = 'out/big_orders_{date}.jsonl',

  'batch.size' = '1000',
  'batch.timeout' = '500ms'
);
