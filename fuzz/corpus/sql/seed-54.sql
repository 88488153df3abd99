-- profile variables (${out_dir}, ${kafka_like}) are usable in WITH values
SELECT id FROM orders WHERE amount > 100 INTO out
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
      'out.type' = 'file_sink', 'out.path' = '${out_dir}/ids-${suffix}.csv');
