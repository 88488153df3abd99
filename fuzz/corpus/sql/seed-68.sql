-- ksqlDB-style keys are warned about with our spelling; an application of
-- source declarations only says it has no query
CREATE STREAM pageviews (n BIGINT) WITH (kafka_topic = 'pageviews', value_format = 'json',
  'pageviews.type' = 'file_source', 'pageviews.path' = 'data/in.jsonl');
