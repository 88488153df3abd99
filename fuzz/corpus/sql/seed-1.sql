-- @application: annotated_app
-- @version: 1.2
-- @job_name: named_by_annotation
-- @some_future_thing: ignored
CREATE STREAM s AS SELECT id FROM orders WHERE id = 1 INTO out
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
      'out.type' = 'file_sink', 'out.path' = 'out/one.csv');
