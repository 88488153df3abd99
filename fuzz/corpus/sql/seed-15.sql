SELECT id FROM orders WHERE region = '${REGION}' INTO out
WITH ('orders.type' = 'file_source', 'orders.path' = '${DATA_DIR:-data}/orders.jsonl',
      'out.type' = 'file_sink', 'out.path' = 'out/${REGION}-${DATE}.csv');
