SELECT n FROM nums WHERE n <= 3 INTO gz, zs, app
WITH ('nums.type' = 'file_source', 'nums.path' = 'data/nums.jsonl',
      'gz.type' = 'file_sink', 'gz.path' = 'out/n.jsonl.gz', 'gz.compression' = 'gzip',
      'zs.type' = 'file_sink', 'zs.path' = 'out/n.csv.zst', 'zs.compression' = 'zstd',
      'app.type' = 'file_sink', 'app.path' = 'out/log.jsonl', 'app.append' = 'true');
