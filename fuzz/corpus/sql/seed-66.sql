CREATE STREAM a AS SELECT * FROM src1 INTO out1 WITH ('out1.type' = 'stdout');
CREATE STREAM b AS SELECT * FROM src2 INTO out2 WITH ('src2.type' = 'file_source', 'src2.path' = 'x.csv', 'out2.type' = 'file_sink', 'out2.path' = 'o.csv', 'batch.timeout' = 'soon');
