-- Upgrades of an existing warehouse, run after the tables exist, by every backend.
-- Portable SQL, run once per schema version (when its etl_schema row is missing).

-- Schema 2: the per-file aggregates, filled from facts loaded before they existed.
INSERT INTO agg_product_day (file_id, date_key, branch_key, product_key, quantity, revenue)
SELECT file_id, date_key, branch_key, product_key, count(*), sum(unit_price)
FROM fact_sale_item
WHERE NOT EXISTS (SELECT 1 FROM agg_product_day)
GROUP BY file_id, date_key, branch_key, product_key;

INSERT INTO agg_sale_hour
SELECT f.file_id, f.date_key, f.branch_key, t.hour, count(*), sum(f.item_count), sum(f.total)
FROM fact_sale f JOIN dim_time t ON t.time_key = f.time_key
WHERE NOT EXISTS (SELECT 1 FROM agg_sale_hour)
GROUP BY f.file_id, f.date_key, f.branch_key, t.hour;

INSERT INTO agg_customer_day
SELECT file_id, date_key, branch_key, count(DISTINCT customer_key)
FROM fact_sale
WHERE customer_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM agg_customer_day)
GROUP BY file_id, date_key, branch_key;

UPDATE dim_customer SET first_branch_key = m.branch_key
FROM (SELECT f.customer_key, d.date, min(f.branch_key) AS branch_key
      FROM fact_sale f JOIN dim_date d ON d.date_key = f.date_key
      WHERE f.customer_key IS NOT NULL
      GROUP BY f.customer_key, d.date) m
WHERE dim_customer.first_branch_key IS NULL
  AND m.customer_key = dim_customer.customer_key AND m.date = dim_customer.first_seen;;

-- Schema 3: every customer's first sale (day, and lowest branch key that day) as the
-- facts hold it; customers without a sale leave. Loads keep it so from now on.
UPDATE dim_customer SET first_seen = m.first_seen, first_branch_key = m.first_branch_key
FROM (SELECT f.customer_key, d.date AS first_seen, min(f.branch_key) AS first_branch_key
      FROM fact_sale f
      JOIN (SELECT customer_key, min(date_key) AS first_key FROM fact_sale
            WHERE customer_key IS NOT NULL GROUP BY customer_key) k
        ON k.customer_key = f.customer_key AND k.first_key = f.date_key
      JOIN dim_date d ON d.date_key = f.date_key
      GROUP BY f.customer_key, d.date) m
WHERE dim_customer.customer_key = m.customer_key
  AND (dim_customer.first_seen <> m.first_seen OR dim_customer.first_branch_key IS NULL
       OR dim_customer.first_branch_key <> m.first_branch_key);

DELETE FROM dim_customer
WHERE NOT EXISTS (SELECT 1 FROM fact_sale f WHERE f.customer_key = dim_customer.customer_key);

-- Schema 4: sales per product and pairs of products per file, from the facts loaded
-- before they were counted at load time. A statement with `file_id BETWEEN ? AND ?`
-- runs once per range of file ids (schema.py), so no join holds every line item at once.
-- The sales per product: a range's rows made again from its facts, with the new column
-- (on PostgreSQL without statistics an UPDATE joined to a grouped query ran for minutes).
DELETE FROM agg_product_day WHERE sales IS NULL AND file_id BETWEEN ? AND ?;

INSERT INTO agg_product_day (file_id, date_key, branch_key, product_key, quantity, revenue, sales)
SELECT file_id, date_key, branch_key, product_key, count(*), sum(unit_price), count(DISTINCT source_row)
FROM fact_sale_item
WHERE file_id BETWEEN ? AND ?
  AND file_id NOT IN (SELECT file_id FROM agg_product_day WHERE file_id BETWEEN ? AND ?)
GROUP BY file_id, date_key, branch_key, product_key;

INSERT INTO agg_pair_day (file_id, date_key, branch_key, a_key, b_key, sales)
SELECT a.file_id, a.date_key, a.branch_key, a.product_key, b.product_key, count(*)
FROM (SELECT DISTINCT file_id, source_row, date_key, branch_key, product_key FROM fact_sale_item
      WHERE file_id BETWEEN ? AND ?) a
JOIN (SELECT DISTINCT file_id, source_row, product_key FROM fact_sale_item WHERE file_id BETWEEN ? AND ?) b
  ON b.file_id = a.file_id AND b.source_row = a.source_row AND b.product_key > a.product_key
WHERE NOT EXISTS (SELECT 1 FROM agg_pair_day WHERE file_id BETWEEN ? AND ?)
GROUP BY a.file_id, a.date_key, a.branch_key, a.product_key, b.product_key;

-- Schema 5: the chain's pairs per day, added up from the per-file pairs already counted
-- (made again whole: rows an older loader left behind would be out of step).
DELETE FROM agg_pair_date;

INSERT INTO agg_pair_date (date_key, a_key, b_key, sales)
SELECT date_key, a_key, b_key, sum(sales) FROM agg_pair_day
GROUP BY date_key, a_key, b_key;

-- Schema 6: each customer's sales to date (last day, how many, for how much), from the
-- facts loaded before loads kept them.
UPDATE dim_customer SET last_seen = m.last_seen, sales = m.sales, revenue = m.revenue
FROM (SELECT t.customer_key, d.date AS last_seen, t.sales, t.revenue
      FROM (SELECT customer_key, max(date_key) AS last_key, count(*) AS sales, sum(total) AS revenue
            FROM fact_sale WHERE customer_key IS NOT NULL GROUP BY customer_key) t
      JOIN dim_date d ON d.date_key = t.last_key) m
WHERE dim_customer.customer_key = m.customer_key
  AND (dim_customer.sales IS DISTINCT FROM m.sales OR dim_customer.revenue IS DISTINCT FROM m.revenue
       OR dim_customer.last_seen IS DISTINCT FROM m.last_seen);

-- and each customer's weeks (with the week of their first sale) and branches, made whole.
DELETE FROM agg_customer_week;

INSERT INTO agg_customer_week (customer_key, monday, cohort, sales)
SELECT w.customer_key, w.monday, c.first_seen - (f.weekday - 1), w.sales
FROM (SELECT s.customer_key, d.date - (d.weekday - 1) AS monday, count(*) AS sales
      FROM fact_sale s JOIN dim_date d ON d.date_key = s.date_key
      WHERE s.customer_key IS NOT NULL
      GROUP BY s.customer_key, d.date - (d.weekday - 1)) w
JOIN dim_customer c ON c.customer_key = w.customer_key
JOIN dim_date f ON f.date = c.first_seen;

DELETE FROM agg_customer_branch;

INSERT INTO agg_customer_branch (customer_key, branch_key, first_key, last_key)
SELECT customer_key, branch_key, min(date_key), max(date_key)
FROM fact_sale WHERE customer_key IS NOT NULL
GROUP BY customer_key, branch_key;
