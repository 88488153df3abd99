-- @application: quickstart
-- @description: Generated orders -> filter/project -> a table on stdout and a JSON Lines file.
--
-- Run it with:  cargo run -q -- run examples/quickstart.sql
-- Nothing to install: the input comes from the built-in generator.

CREATE STREAM big_orders AS
SELECT order_id,
       customer_id,
       amount,
       status,
       CASE WHEN amount > 900 THEN 'VIP' ELSE 'REGULAR' END AS tier
FROM orders
WHERE amount > 800 AND status <> 'CANCELLED'
INTO console, archive
WITH (
    'orders.type' = 'datagen',
    'orders.columns' = 'order_id:sequence(1), customer_id:int(1,50), amount:float(1,1000), status:oneof(NEW|PAID|SHIPPED|CANCELLED)',
    'orders.rows' = '40',
    'orders.seed' = '7',

    'console.type' = 'stdout',
    'console.format' = 'table',

    'archive.type' = 'file_sink',
    'archive.path' = 'out/big_orders.jsonl',
    'archive.format' = 'jsonl'
);
