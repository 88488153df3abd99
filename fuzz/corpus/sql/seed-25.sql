SELECT * FROM orders_source INTO out WITH ('orders_source.path' = 'x.csv', 'out.type' = 'stdout');
