-- The SQLite shell's workload in the real-programs suite: tables, indexes,
-- recursive CTEs, joins, aggregates, window functions, JSON, triggers,
-- views, a transaction rolled back, the shell's output modes and .dump.
CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, kind INTEGER);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
INSERT INTO item SELECT i, printf('item-%05d-%08x', i, (i * 2654435761) % 4294967296),
                        (i * 37 % 1000) / 7.0, i % 13 FROM n;
CREATE INDEX item_name ON item(name);
CREATE INDEX item_kind_price ON item(kind, price);
CREATE TABLE kind(id INTEGER PRIMARY KEY, label TEXT);
WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < 12)
INSERT INTO kind SELECT i, 'kind ' || char(65 + i) FROM k;
CREATE TABLE audit(at INTEGER PRIMARY KEY, what TEXT);
CREATE TRIGGER item_price AFTER UPDATE OF price ON item
  BEGIN INSERT INTO audit(what) VALUES (printf('%d: %.2f -> %.2f', old.id, old.price, new.price)); END;
UPDATE item SET price = price * 1.5 WHERE id % 4999 = 0;
SELECT count(*), sum(id), round(avg(price), 6), min(name), max(name) FROM item;
SELECT k.label, count(*), round(sum(i.price), 3), round(max(i.price) - min(i.price), 3)
  FROM item i JOIN kind k ON k.id = i.kind GROUP BY k.id ORDER BY k.id;
SELECT id, name, rank() OVER (PARTITION BY kind ORDER BY price DESC, id) AS r,
       round(sum(price) OVER (ORDER BY id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW), 3)
  FROM item WHERE id % 1999 = 0 ORDER BY id;
SELECT group_concat(substr(name, 6, 5), ',') FROM (SELECT name FROM item ORDER BY name DESC LIMIT 15);
SELECT json_group_array(json_object('id', id, 'price', price)) FROM item WHERE id <= 4;
SELECT json_extract('{"a":[1,2,{"b":"deep"}]}', '$.a[2].b'), json_array_length('[1,2,3,4]');
CREATE VIEW dear AS SELECT kind, count(*) AS n FROM item WHERE price > 100 GROUP BY kind;
SELECT * FROM dear WHERE n > (SELECT avg(n) FROM dear) ORDER BY kind;
SELECT * FROM audit ORDER BY at;
BEGIN;
DELETE FROM item WHERE kind = 3;
SELECT count(*) FROM item;
ROLLBACK;
SELECT count(*) FROM item WHERE kind = 3;
SELECT date('2024-02-28', '+1 day'), strftime('%j', '2024-12-31'), julianday('2000-01-01');
SELECT hex(zeroblob(4)), upper('wxarena'), replace('a-b-c', '-', '+'), instr('hello', 'll'),
       quote('it''s'), typeof(1.0), 7 / 2, 7 % 3, -7 / 2.0, abs(-42), length(x'0102');
SELECT total(price) FROM item WHERE name LIKE 'item-0001%';
SELECT id FROM item WHERE name GLOB 'item-0000[1-3]-*' ORDER BY id;
.headers on
.mode box
SELECT id, label FROM kind WHERE id < 4;
.mode csv
SELECT * FROM item WHERE id IN (1, 2, 29999);
.mode line
SELECT * FROM kind WHERE id = 5;
.mode list
CREATE TABLE small(a, b);
INSERT INTO small VALUES (1, 'one'), (2.5, NULL), (x'00ff', 'blob');
.dump small
PRAGMA integrity_check;
