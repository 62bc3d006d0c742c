"""Staged output: the rows a warehouse loads for one batch, already keyed.

Only files whose verdict is "load" contribute facts and dimension rows; rejects
are kept for loaded files and for files that failed because every row was bad
(so the quarantine shows why). Every ``out_*`` table is free of personal data.
"""

from __future__ import annotations

from cafe_etl.engine import Engine, temp_table

PAYMENT_KEYS = {"CASH": 1, "CARD": 2}

# Views where a result is read once, by the load; tables where it is read more than once.
# The identity of a sale is its source: (file_id, source_row) (DESIGN §3).
_SALES = f"""
CREATE OR REPLACE TEMP VIEW out_sale AS
SELECT b.file_id, c.line_no AS source_row,
       c.date_key, c.time_key,
       c.branch_key,
       CASE c.payment WHEN 'CASH' THEN {PAYMENT_KEYS["CASH"]} ELSE {PAYMENT_KEYS["CARD"]} END::SMALLINT AS payment_key,
       c.customer_key, c.n_items::SMALLINT AS item_count, c.total
FROM stg_check c JOIN batch_file b ON b.idx = c.idx AND b.load
WHERE c.outcome = 'sale'
"""

# Read by the items load and by the per-product aggregate.
_ITEMS = """
CREATE OR REPLACE TEMP TABLE out_item AS
SELECT b.file_id, c.line_no AS source_row, i.item_no AS line_number,
       i.product_key, i.price AS unit_price,
       c.date_key, c.branch_key
FROM stg_check c
JOIN batch_file b ON b.idx = c.idx AND b.load
JOIN stg_basket_item i ON i.basket_no = c.basket_no
WHERE c.outcome = 'sale'
"""

_REJECTS = """
CREATE OR REPLACE TEMP TABLE out_reject AS
SELECT b.file_id, c.line_no AS source_row, c.reason AS reason_code, c.detail, c.row_data
FROM stg_check c JOIN batch_file b ON b.idx = c.idx AND b.keep_rejects
WHERE c.outcome = 'reject'
"""

# Every well-formed item of the batch: a superset of the products its sales reference.
_PRODUCTS = """
CREATE OR REPLACE TEMP TABLE out_product AS
SELECT DISTINCT product_key, size, name, flavour FROM stg_item_dict WHERE reason IS NULL
"""

_LOADED = "FROM stg_check c JOIN batch_file b ON b.idx = c.idx AND b.load WHERE c.outcome = 'sale'"

_BRANCHES = f"""
CREATE OR REPLACE TEMP TABLE out_branch AS
SELECT n.branch_key, n.branch_id, n.name, s.first_seen
FROM (SELECT c.branch_key, min(c.sold_at)::DATE AS first_seen {_LOADED} GROUP BY c.branch_key) s
JOIN stg_branch_name n USING (branch_key)
"""

# A customer's first branch: of the branches they bought at on their first day, the
# lowest key. Defined by the data alone, so the order files are loaded in cannot change it.
# Day and branch are packed into one number whose minimum is both at once (a branch
# key has 60 bits), cheaper than comparing (day, branch) pairs. With them, the batch's
# part of the customer's sales to date: the last day, how many, for how much.
_CUSTOMERS = f"""
CREATE OR REPLACE TEMP TABLE out_customer AS
SELECT customer_key, make_date(day // 10000, day // 100 % 100, day % 100) AS first_seen, first_branch_key,
       make_date(last_key // 10000, last_key // 100 % 100, last_key % 100) AS last_seen, sales, revenue
FROM (SELECT customer_key, (first >> 60)::INTEGER AS day, (first & {(1 << 60) - 1})::BIGINT AS first_branch_key,
             last_key, sales, revenue
      FROM (SELECT c.customer_key, min((c.date_key::HUGEINT << 60) + c.branch_key) AS first,
                   max(c.date_key) AS last_key, count(*) AS sales, sum(c.total) AS revenue
            {_LOADED} AND c.customer_key IS NOT NULL
            GROUP BY c.customer_key))
"""

# Per-file aggregates: what the dashboard reads instead of scanning every line item.
# Keyed by file like the facts, so a replaced file's aggregates leave with its rows.
_AGGREGATES = [
    """
CREATE OR REPLACE TEMP VIEW out_product_day AS
SELECT file_id, date_key, branch_key, product_key, count(*)::INTEGER AS quantity, sum(unit_price) AS revenue,
       count(DISTINCT source_row)::INTEGER AS sales
FROM out_item
GROUP BY file_id, date_key, branch_key, product_key
""",
    # each pair of products in a sale once, the lower key first (a sale is its file and row)
    """
CREATE OR REPLACE TEMP VIEW out_pair_day AS
WITH held AS (SELECT DISTINCT file_id, source_row, date_key, branch_key, product_key FROM out_item)
SELECT a.file_id, a.date_key, a.branch_key, a.product_key AS a_key, b.product_key AS b_key,
       count(*)::INTEGER AS sales
FROM held a JOIN held b ON b.file_id = a.file_id AND b.source_row = a.source_row AND b.product_key > a.product_key
GROUP BY a.file_id, a.date_key, a.branch_key, a.product_key, b.product_key
""",
    f"""
CREATE OR REPLACE TEMP VIEW out_sale_hour AS
SELECT b.file_id, c.date_key, c.branch_key, (c.time_key // 100)::SMALLINT AS hour,
       count(*)::INTEGER AS transactions, sum(c.n_items)::INTEGER AS items, sum(c.total) AS revenue
{_LOADED}
GROUP BY b.file_id, c.date_key, c.branch_key, c.time_key // 100
""",
    # distinct customers counted as the groups of a distinct (cheaper than count(DISTINCT))
    f"""
CREATE OR REPLACE TEMP VIEW out_customer_day AS
SELECT file_id, date_key, branch_key, count(*)::INTEGER AS customers
FROM (SELECT DISTINCT b.file_id, c.date_key, c.branch_key, c.customer_key
      {_LOADED} AND c.customer_key IS NOT NULL)
GROUP BY file_id, date_key, branch_key
""",
]

# The batch's part of each customer's weeks (Monday to Sunday) and of their days per
# branch, which the SQL warehouses keep (agg_customer_week, agg_customer_branch).
_CUSTOMER_ROLLUPS = [
    f"""
CREATE OR REPLACE TEMP VIEW out_customer_week AS
SELECT c.customer_key, date_trunc('week', c.sold_at)::DATE AS monday, count(*)::INTEGER AS sales
{_LOADED} AND c.customer_key IS NOT NULL
GROUP BY c.customer_key, date_trunc('week', c.sold_at)::DATE
""",
    f"""
CREATE OR REPLACE TEMP VIEW out_customer_branch AS
SELECT c.customer_key, c.branch_key, min(c.date_key) AS first_key, max(c.date_key) AS last_key
{_LOADED} AND c.customer_key IS NOT NULL
GROUP BY c.customer_key, c.branch_key
""",
]

_DATES = f"""
CREATE OR REPLACE TEMP TABLE out_date AS
SELECT c.date_key, any_value(c.sold_at::DATE) AS date {_LOADED} GROUP BY c.date_key
"""


# What a warehouse loads of a batch: every ``out_*`` relation above.
STAGED = ("out_sale", "out_item", "out_reject", "out_product", "out_branch", "out_customer", "out_date",
          "out_product_day", "out_pair_day", "out_sale_hour", "out_customer_day", "out_customer_week",
          "out_customer_branch")


def stage(engine: Engine, files: list[tuple[int, int, bool, bool]]) -> None:
    """``files``: (idx, file_id, load its facts, keep its rejects) for every file of the batch."""
    temp_table(engine.con, "batch_file",
               [("idx", "INTEGER"), ("file_id", "BIGINT"), ("load", "BOOLEAN"), ("keep_rejects", "BOOLEAN")], files)
    for sql in (_SALES, _ITEMS, _REJECTS, _PRODUCTS, _BRANCHES, _CUSTOMERS, _DATES, *_AGGREGATES, *_CUSTOMER_ROLLUPS):
        engine.run(sql)
