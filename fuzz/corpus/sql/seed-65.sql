-- quoted URIs in place of names, options in the query string
SELECT name, score FROM 'file://data/scores.txt?format=csv&delimiter=|' WHERE score > 1
INTO 'file://out/top.csv?delimiter=;';
