-- a typo in the SELECT
CREATE STREAM s AS
SELECT id,, amount FROM o
WITH ('o.type' = 'datagen');
