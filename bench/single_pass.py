"""The yardstick: a careful hand-written single-pass DuckDB SQL transform of the core of
the pipeline's work, for comparison with `cafe-etl ingest` on the same machine.

Every file of a folder is read, cut into fields, its customers keyed with HMAC-SHA256,
its baskets parsed once per distinct spelling through a dictionary of items, its sales
checked (timestamp, payment, total = sum of prices) and loaded with their line items,
products, branches and customers into a fresh DuckDB file, in one transaction, one SQL
statement per table, on all cores.

It does less than the pipeline, so it flatters itself: no ledger (no file versions, no
SHA-256 of the files), no header, layout or branch detection (canonical rows only), no
duplicate rows, no quarantine (a bad row is only left out), no accounting check, no
date and time dimensions, no per-file aggregates for the dashboard, one batch for the
whole folder (hence its memory).

    python bench/single_pass.py FOLDER [--out bench/out/single-pass.duckdb]

Prints its wall time, the sales and items it loaded, and its peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent

# A fixed secret: the yardstick's keys are thrown away with its warehouse.
_SECRET = b"yardstick secret, not a real key"
_INNER = bytes(b ^ 0x36 for b in _SECRET.ljust(64, b"\0"))
_OUTER = bytes(b ^ 0x5C for b in _SECRET.ljust(64, b"\0"))

STEPS = [
    # Lines and fields. A quoted basket lies between the third comma and the third-last.
    """CREATE TEMP TABLE line AS
SELECT idx, line_no, c[1] AS f_when, c[2] AS f_branch,
       CASE WHEN len(c) = 7 THEN c[4]
            ELSE substr(raw, length(c[1]) + length(c[2]) + length(c[3]) + 4,
                        length(raw) - length(c[1]) - length(c[2]) - length(c[3])
                            - length(c[-3]) - length(c[-2]) - length(c[-1]) - 6) END AS basket,
       c[-3] AS f_total, c[-2] AS f_payment,
       lower(c[3]) || chr(0) || CASE WHEN c[-2] = 'CARD' THEN c[-1] ELSE '' END AS identity,
       try_strptime(c[1], '%d/%m/%Y %H:%M') AS sold_at
FROM (SELECT idx, line_no, raw, string_split(raw, ',') AS c
      FROM (SELECT file_index AS idx, generate_subscripts(l, 1) AS line_no, unnest(l) AS raw
            FROM (SELECT file_index, string_split(content, chr(10)) AS l FROM read_text($files)))
      WHERE raw <> '')""",
    # Baskets, items and the dictionary of item spellings.
    """CREATE TEMP TABLE basket AS
SELECT row_number() OVER () AS basket_no, basket FROM (SELECT DISTINCT basket FROM line)""",
    """CREATE TEMP TABLE item AS
SELECT basket_no, generate_subscripts(l, 1) AS item_no, trim(unnest(l), ' "') AS item_text
FROM (SELECT basket_no, string_split(basket, ',') AS l FROM basket)""",
    """CREATE TEMP TABLE dict AS
SELECT item_text, size, trim(split_part(product, ' - ', 1)) AS name,
       nullif(trim(substr(product, length(split_part(product, ' - ', 1)) + 4)), '') AS flavour,
       TRY_CAST(price_text AS DECIMAL(10, 2)) AS price
FROM (SELECT item_text, price_text, split_part(head, ' ', 1) AS size,
             substr(head, length(split_part(head, ' ', 1)) + 2) AS product
      FROM (SELECT item_text, split_part(item_text, ' - ', -1) AS price_text,
                   left(item_text, length(item_text) - length(split_part(item_text, ' - ', -1)) - 3) AS head
            FROM (SELECT DISTINCT item_text FROM item)))""",
    """CREATE TEMP TABLE product AS
SELECT *, (md5_number(size || chr(31) || name || chr(31) || coalesce(flavour, '')) >> 68)::BIGINT AS product_key
FROM dict""",
    """CREATE TEMP TABLE basket_item AS
SELECT i.basket_no, i.item_no, p.product_key, p.price FROM item i JOIN product p USING (item_text)""",
    """CREATE TEMP TABLE basket_total AS
SELECT b.basket, t.basket_no, t.n_items, t.items_total
FROM basket b JOIN (SELECT basket_no, count(*) AS n_items, sum(price) AS items_total
                    FROM basket_item GROUP BY basket_no) t USING (basket_no)""",
    # One keyed hash per distinct customer.
    """CREATE TEMP TABLE customer AS
SELECT identity, ('0x' || left(sha256($outer || unhex(sha256($inner || encode(identity)))), 15))::BIGINT
           AS customer_key
FROM (SELECT DISTINCT identity FROM line)""",
    # The sales that pass the checks.
    """CREATE TEMP TABLE sale AS
SELECT l.idx, l.line_no, l.sold_at, (md5_number(lower(l.f_branch)) >> 68)::BIGINT AS branch_key,
       CASE l.f_payment WHEN 'CASH' THEN 1 ELSE 2 END::SMALLINT AS payment_key, c.customer_key,
       b.basket_no, b.n_items, TRY_CAST(l.f_total AS DECIMAL(10, 2)) AS total, l.f_branch
FROM line l JOIN basket_total b USING (basket) LEFT JOIN customer c USING (identity)
WHERE l.sold_at IS NOT NULL AND l.f_payment IN ('CASH', 'CARD')
  AND abs(b.items_total - TRY_CAST(l.f_total AS DECIMAL(10, 2))) < 0.005""",
    # The star schema, in one transaction.
    "BEGIN",
    """CREATE TABLE wh.fact_sale AS
SELECT idx AS file_id, line_no AS source_row, (year(sold_at) * 10000 + month(sold_at) * 100 + day(sold_at))::INTEGER
           AS date_key,
       (hour(sold_at) * 100 + minute(sold_at))::SMALLINT AS time_key, branch_key, payment_key, customer_key,
       n_items::SMALLINT AS item_count, total
FROM sale""",
    """CREATE TABLE wh.fact_sale_item AS
SELECT s.idx AS file_id, s.line_no AS source_row, i.item_no::SMALLINT AS line_number, i.product_key,
       i.price AS unit_price
FROM sale s JOIN basket_item i USING (basket_no)""",
    """CREATE TABLE wh.dim_customer AS
SELECT customer_key, min(sold_at)::DATE AS first_seen FROM sale WHERE customer_key IS NOT NULL GROUP BY customer_key""",
    "CREATE TABLE wh.dim_product AS SELECT DISTINCT product_key, size, name, flavour FROM product",
    "CREATE TABLE wh.dim_branch AS SELECT branch_key, any_value(f_branch) AS name FROM sale GROUP BY branch_key",
    "COMMIT",
    "CHECKPOINT wh",
]


def run(folder: Path, out: Path) -> tuple[float, int, int]:
    """(wall seconds, sales loaded, items loaded) of one single-pass load into a fresh ``out``."""
    files = sorted(str(p) for p in folder.glob("*.csv"))
    for stale in (out, Path(f"{out}.wal")):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()
    con = duckdb.connect(":memory:", config={"threads": os.cpu_count() or 1, "preserve_insertion_order": False})
    con.execute("SET enable_progress_bar = false")
    con.execute("ATTACH ? AS wh", [str(out)])
    values = {"files": files, "inner": _INNER, "outer": _OUTER}
    for sql in STEPS:
        con.execute(sql, {k: v for k, v in values.items() if f"${k}" in sql} or None)
    wall = time.perf_counter() - started
    sales, items = con.execute("SELECT (SELECT count(*) FROM wh.fact_sale), (SELECT count(*) FROM wh.fact_sale_item)"
                               ).fetchone()
    con.close()
    return wall, sales, items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "single-pass.duckdb")
    args = parser.parse_args()
    wall, sales, items = run(args.folder, args.out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"single pass: {wall:.2f} s, {sales:,} sales, {items:,} items, peak RSS {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
