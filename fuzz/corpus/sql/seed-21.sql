-- bounds with messages that say what to do: more partitions than the
-- machine can use, a HOP window that puts a record in too many windows, a
-- window longer than 1,000 years, a config file that never ends
CREATE STREAM parts AS SELECT n, COUNT(*) AS c FROM src GROUP BY n, TUMBLE(ts, INTERVAL '1' SECOND) INTO a
WITH ('src.type' = 'file_source', 'src.path' = 'data/in.jsonl', 'src.event.time.field' = 'ts',
      'a.type' = 'stdout', 'partitions' = '10000');

CREATE STREAM hops AS SELECT n, COUNT(*) AS c FROM src GROUP BY n, HOP(ts, INTERVAL '1' MILLISECOND, INTERVAL '1' DAY) INTO b
WITH ('b.type' = 'stdout');

CREATE STREAM ages AS SELECT n, COUNT(*) AS c FROM src GROUP BY n, TUMBLE(ts, INTERVAL '400000' DAY) INTO c
WITH ('c.type' = 'stdout');

CREATE STREAM endless AS SELECT n FROM src INTO d
WITH ('d.config_file' = 'endless.yaml');
