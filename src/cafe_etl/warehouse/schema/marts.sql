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
SELECT d.date, i.date_key, b.branch_key, b.name AS branch,
       p.product_key, p.size, p.name AS product, p.flavour,
       count(*) AS quantity,
       sum(i.unit_price) AS revenue
FROM fact_sale_item i
JOIN dim_date d ON d.date_key = i.date_key
JOIN dim_branch b ON b.branch_key = i.branch_key
JOIN dim_product p ON p.product_key = i.product_key
GROUP BY d.date, i.date_key, b.branch_key, b.name, p.product_key, p.size, p.name, p.flavour;

CREATE OR REPLACE VIEW mart_hourly_sales AS
SELECT d.date, f.date_key, d.weekday, d.weekday_name, b.branch_key, b.name AS branch, t.hour,
       count(*) AS transactions,
       sum(f.total) AS revenue
FROM fact_sale f
JOIN dim_date d ON d.date_key = f.date_key
JOIN dim_time t ON t.time_key = f.time_key
JOIN dim_branch b ON b.branch_key = f.branch_key
GROUP BY d.date, f.date_key, d.weekday, d.weekday_name, b.branch_key, b.name, t.hour;

CREATE OR REPLACE VIEW mart_customer_retention AS
WITH first_visit AS (
    SELECT customer_key, min(date_key) AS first_date_key
    FROM fact_sale WHERE customer_key IS NOT NULL
    GROUP BY customer_key
), visit AS (
    SELECT DISTINCT date_key, branch_key, customer_key
    FROM fact_sale WHERE customer_key IS NOT NULL
)
SELECT d.date, v.date_key, b.branch_key, b.name AS branch,
       count(*) AS customers,
       sum(CASE WHEN fv.first_date_key = v.date_key THEN 1 ELSE 0 END) AS new_customers,
       sum(CASE WHEN fv.first_date_key < v.date_key THEN 1 ELSE 0 END) AS returning_customers
FROM visit v
JOIN first_visit fv ON fv.customer_key = v.customer_key
JOIN dim_date d ON d.date_key = v.date_key
JOIN dim_branch b ON b.branch_key = v.branch_key
GROUP BY d.date, v.date_key, b.branch_key, b.name;
