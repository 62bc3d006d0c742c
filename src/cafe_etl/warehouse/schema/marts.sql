-- Mart views: what dashboards and Grafana query. Portable SQL (DuckDB, PostgreSQL,
-- Redshift): no FILTER clauses, no dialect functions.

CREATE OR REPLACE VIEW mart_daily_branch_sales AS
SELECT d.date, f.date_key, b.branch_key, b.name AS branch,
       count(*) AS transactions,
       sum(f.item_count) AS items,
       sum(f.total) AS revenue,
       avg(f.total) AS average_basket
FROM fact_sale f
JOIN dim_date d ON d.date_key = f.date_key
JOIN dim_branch b ON b.branch_key = f.branch_key
GROUP BY d.date, f.date_key, b.branch_key, b.name;

CREATE OR REPLACE VIEW mart_product_sales AS
SELECT d.date, a.date_key, b.branch_key, b.name AS branch,
       p.product_key, p.size, p.name AS product, p.flavour,
       sum(a.quantity) AS quantity,
       sum(a.revenue) AS revenue,
       coalesce(p.category, 'Other') AS category,
       sum(a.sales) AS sales  -- sales holding the product at least once
FROM agg_product_day a
JOIN dim_date d ON d.date_key = a.date_key
JOIN dim_branch b ON b.branch_key = a.branch_key
JOIN dim_product p ON p.product_key = a.product_key
GROUP BY d.date, a.date_key, b.branch_key, b.name, p.product_key, p.size, p.name, p.flavour, p.category;

-- Product categories per branch and day (the categories file: cafe_etl/categories.py).
CREATE OR REPLACE VIEW mart_category_sales AS
SELECT d.date, a.date_key, b.branch_key, b.name AS branch, coalesce(p.category, 'Other') AS category,
       sum(a.quantity) AS quantity,
       sum(a.revenue) AS revenue
FROM agg_product_day a
JOIN dim_date d ON d.date_key = a.date_key
JOIN dim_branch b ON b.branch_key = a.branch_key
JOIN dim_product p ON p.product_key = a.product_key
GROUP BY d.date, a.date_key, b.branch_key, b.name, coalesce(p.category, 'Other');

-- Every product with its label as a till prints it and its category: for panels that
-- group by product key and name the products last.
CREATE OR REPLACE VIEW mart_products AS
SELECT p.product_key, p.size, p.name AS product, p.flavour,
       CASE WHEN p.size IS NULL THEN '' ELSE p.size || ' ' END || p.name
         || CASE WHEN p.flavour IS NULL THEN '' ELSE ' - ' || p.flavour END AS label,
       coalesce(p.category, 'Other') AS category
FROM dim_product p;

-- Pairs of products bought in the same sale (a_key < b_key), per file's branch and day
-- (DESIGN §11's n_ab); with mart_product_sales.sales (n_a, n_b) and the transactions a
-- panel gets support, confidence and lift for any period. No grouping here: a panel
-- sums what its period and branches select.
CREATE OR REPLACE VIEW mart_product_pairs AS
SELECT d.date, a.date_key, b.branch_key, b.name AS branch, a.a_key, a.b_key, a.sales
FROM agg_pair_day a
JOIN dim_date d ON d.date_key = a.date_key
JOIN dim_branch b ON b.branch_key = a.branch_key;

-- The week `cafe-etl trends` judges by default: the last 7 days with sales, and how many
-- whole weeks before them the warehouse holds (at most four).
CREATE OR REPLACE VIEW mart_trend_week AS
SELECT last_day - 6 AS week_first, last_day AS week_last,
       CASE WHEN last_day - 6 - first_day >= 28 THEN 4
            ELSE CAST(floor((last_day - 6 - first_day) / 7.0) AS INTEGER) END AS weeks
FROM (SELECT max(d.date) AS last_day, min(d.date) AS first_day
      FROM agg_sale_hour a JOIN dim_date d ON d.date_key = a.date_key) bounds;

-- That week against the weekly mean of the whole weeks before it, as `cafe-etl trends`
-- compares them: branches by transactions. Every branch with a baseline is listed;
-- which changes are significant (q <= 0.05) is the command's and the dashboard's
-- Trends page's to say.
CREATE OR REPLACE VIEW mart_branch_week_change AS
WITH counts AS (
    SELECT a.branch_key, w.week_first, w.week_last, w.weeks,
           sum(CASE WHEN d.date >= w.week_first THEN a.transactions ELSE 0 END) AS current_count,
           sum(CASE WHEN d.date < w.week_first THEN a.transactions ELSE 0 END) AS baseline_count
    FROM agg_sale_hour a
    JOIN dim_date d ON d.date_key = a.date_key
    CROSS JOIN mart_trend_week w
    WHERE d.date >= w.week_first - 7 * w.weeks AND d.date <= w.week_last
    GROUP BY a.branch_key, w.week_first, w.week_last, w.weeks
)
SELECT c.week_first, c.week_last, b.name AS branch, c.current_count AS current_week,
       round(CAST(c.baseline_count AS NUMERIC) / c.weeks, 2) AS weekly_baseline,
       round(CAST(100.0 * (c.current_count - c.baseline_count * 1.0 / c.weeks) / (c.baseline_count * 1.0 / c.weeks)
                  AS NUMERIC), 1) AS change_pct
FROM counts c JOIN dim_branch b ON b.branch_key = c.branch_key
WHERE c.weeks > 0 AND c.baseline_count > 0;

-- The same for products chain-wide, by items sold.
CREATE OR REPLACE VIEW mart_product_week_change AS
WITH counts AS (
    SELECT a.product_key, w.week_first, w.week_last, w.weeks,
           sum(CASE WHEN d.date >= w.week_first THEN a.quantity ELSE 0 END) AS current_count,
           sum(CASE WHEN d.date < w.week_first THEN a.quantity ELSE 0 END) AS baseline_count
    FROM agg_product_day a
    JOIN dim_date d ON d.date_key = a.date_key
    CROSS JOIN mart_trend_week w
    WHERE d.date >= w.week_first - 7 * w.weeks AND d.date <= w.week_last
    GROUP BY a.product_key, w.week_first, w.week_last, w.weeks
)
SELECT c.week_first, c.week_last, p.size, p.product, p.flavour, p.label,
       c.current_count AS current_week,
       round(CAST(c.baseline_count AS NUMERIC) / c.weeks, 2) AS weekly_baseline,
       round(CAST(100.0 * (c.current_count - c.baseline_count * 1.0 / c.weeks) / (c.baseline_count * 1.0 / c.weeks)
                  AS NUMERIC), 1) AS change_pct
FROM counts c JOIN mart_products p ON p.product_key = c.product_key
WHERE c.weeks > 0 AND c.baseline_count > 0;

CREATE OR REPLACE VIEW mart_hourly_sales AS
SELECT d.date, a.date_key, d.weekday, d.weekday_name, b.branch_key, b.name AS branch, a.hour,
       sum(a.transactions) AS transactions,
       sum(a.revenue) AS revenue
FROM agg_sale_hour a
JOIN dim_date d ON d.date_key = a.date_key
JOIN dim_branch b ON b.branch_key = a.branch_key
GROUP BY d.date, a.date_key, d.weekday, d.weekday_name, b.branch_key, b.name, a.hour;

-- Customers per branch and day (distinct keyed hashes); new: their first day at the
-- chain, counted at their first branch; returning: the rest.
CREATE OR REPLACE VIEW mart_customer_retention AS
WITH visits AS (
    SELECT date_key, branch_key, sum(customers) AS customers
    FROM agg_customer_day
    GROUP BY date_key, branch_key
), first_visits AS (
    SELECT d.date_key, c.first_branch_key AS branch_key, count(*) AS new_customers
    FROM dim_customer c JOIN dim_date d ON d.date = c.first_seen
    GROUP BY d.date_key, c.first_branch_key
)
SELECT d.date, v.date_key, b.branch_key, b.name AS branch,
       v.customers,
       coalesce(n.new_customers, 0) AS new_customers,
       v.customers - coalesce(n.new_customers, 0) AS returning_customers
FROM visits v
LEFT JOIN first_visits n ON n.date_key = v.date_key AND n.branch_key = v.branch_key
JOIN dim_date d ON d.date_key = v.date_key
JOIN dim_branch b ON b.branch_key = v.branch_key;

-- Customers (DESIGN §11) over the default period, the last 28 days with sales: what
-- `cafe-etl customers` answers without a period, for Grafana. One row per customer with
-- a sale in the period: recency, sales and revenue, the 1-5 scores (RANK, ties taking
-- the lowest rank) and the segment of (R, F).
CREATE OR REPLACE VIEW mart_customer_scores AS
WITH period AS (
    SELECT max(d.date) AS last_day, max(d.date) - 27 AS first_day
    FROM agg_sale_hour a JOIN dim_date d ON d.date_key = a.date_key
), per_customer AS (
    SELECT f.customer_key, count(*) AS sales, sum(f.total) AS revenue,
           min(d.date) AS first_sale, max(d.date) AS last_sale
    FROM fact_sale f
    JOIN dim_date d ON d.date_key = f.date_key
    CROSS JOIN period p
    WHERE f.customer_key IS NOT NULL AND d.date BETWEEN p.first_day AND p.last_day
    GROUP BY f.customer_key
), ranked AS (
    SELECT c.customer_key, c.sales, c.revenue, c.first_sale, c.last_sale, count(*) OVER () AS n,
           RANK() OVER (ORDER BY c.last_sale) AS r_rank,
           RANK() OVER (ORDER BY c.sales) AS f_rank,
           RANK() OVER (ORDER BY c.revenue) AS m_rank
    FROM per_customer c
), scored AS (
    SELECT k.customer_key, p.last_day - k.last_sale AS recency_days, k.sales, k.revenue, k.first_sale, k.last_sale,
           1 + CAST((5 * (k.r_rank - 1) - (5 * (k.r_rank - 1)) % k.n) / k.n AS INTEGER) AS r,
           1 + CAST((5 * (k.f_rank - 1) - (5 * (k.f_rank - 1)) % k.n) / k.n AS INTEGER) AS f,
           1 + CAST((5 * (k.m_rank - 1) - (5 * (k.m_rank - 1)) % k.n) / k.n AS INTEGER) AS m
    FROM ranked k CROSS JOIN period p
)
SELECT s.customer_key, s.recency_days, s.sales, s.revenue, s.first_sale, s.last_sale, s.r, s.f, s.m,
       CASE WHEN s.r = 5 AND s.f >= 4 THEN 'Champions'
            WHEN s.r IN (3, 4) AND s.f >= 4 THEN 'Loyal'
            WHEN s.r >= 4 AND s.f IN (2, 3) THEN 'Potential Loyalists'
            WHEN s.r = 5 AND s.f = 1 THEN 'Recent One-Timers'
            WHEN s.r = 4 AND s.f = 1 THEN 'Promising'
            WHEN s.r = 3 AND s.f = 3 THEN 'Need Attention'
            WHEN s.r = 3 AND s.f <= 2 THEN 'About to Sleep'
            WHEN s.r <= 2 AND s.f IN (3, 4) THEN 'At Risk'
            WHEN s.r <= 2 AND s.f = 5 THEN 'Can''t Lose'
            ELSE 'Hibernating' END AS segment
FROM scored s;

CREATE OR REPLACE VIEW mart_customer_segments AS
SELECT segment, count(*) AS customers, sum(sales) AS sales, sum(revenue) AS revenue
FROM mart_customer_scores
GROUP BY segment;

-- Weekly cohorts over the default period: customers by the Monday of the week of their
-- first sale ever (Mondays in the period), and how many of them bought in each later
-- week that has ended by the period's last day.
CREATE OR REPLACE VIEW mart_customer_cohorts AS
WITH period AS (
    SELECT max(d.date) AS last_day, max(d.date) - 27 AS first_day
    FROM agg_sale_hour a JOIN dim_date d ON d.date_key = a.date_key
), cohort AS (
    SELECT c.customer_key, c.first_seen - (d.weekday - 1) AS cohort_week
    FROM dim_customer c
    JOIN dim_date d ON d.date = c.first_seen
    CROSS JOIN period p
    WHERE c.first_seen - (d.weekday - 1) BETWEEN p.first_day AND p.last_day
), sizes AS (
    SELECT cohort_week, count(*) AS customers FROM cohort GROUP BY cohort_week
), active AS (
    SELECT DISTINCT c.customer_key, c.cohort_week,
           CAST(((d.date - c.cohort_week) - (d.date - c.cohort_week) % 7) / 7 AS INTEGER) AS weeks_after
    FROM fact_sale f
    JOIN cohort c ON c.customer_key = f.customer_key
    JOIN dim_date d ON d.date_key = f.date_key
    CROSS JOIN period p
    WHERE d.date <= p.last_day
)
SELECT a.cohort_week, a.weeks_after, s.customers AS cohort_customers, count(*) AS active_customers,
       CAST(count(*) AS DOUBLE PRECISION) / s.customers AS retention
FROM active a
JOIN sizes s ON s.cohort_week = a.cohort_week
CROSS JOIN period p
WHERE a.cohort_week + 7 * (a.weeks_after + 1) - 1 <= p.last_day
GROUP BY a.cohort_week, a.weeks_after, s.customers;
