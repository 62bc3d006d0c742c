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
       sum(a.revenue) AS revenue
FROM agg_product_day a
JOIN dim_date d ON d.date_key = a.date_key
JOIN dim_branch b ON b.branch_key = a.branch_key
JOIN dim_product p ON p.product_key = a.product_key
GROUP BY d.date, a.date_key, b.branch_key, b.name, p.product_key, p.size, p.name, p.flavour;

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
