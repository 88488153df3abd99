-- YAML config files: multi-level extends, variables with defaults, inline override
CREATE STREAM s AS SELECT id, item FROM orders WHERE amount > 50 INTO out
WITH ('orders.type' = 'file_source', 'orders.config_file' = 'configs/orders.yaml',
      'out.type' = 'file_sink', 'out.config_file' = 'configs/out.yaml',
      'out.format' = 'csv');
