SELECT name, qty FROM items WHERE qty >= 2 INTO out
WITH ('items.type' = 'file', 'items.path' = 'data/items.json',
      'out.type' = 'file', 'out.path' = 'out/items.jsonl');
