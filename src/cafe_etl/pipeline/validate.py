"""Validate: every line gets exactly one outcome, a sale, a reject with its reason, or ignored.

Checks run in a fixed order and the first failure is the row's reason (DESIGN §3).
Findings are data: they are staged as rows, never raised. Whether a whole file
fails is decided from the per-file counts (``FileCounts``) by ``verdict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cafe_etl.config import Rules
from cafe_etl.engine import Engine
from cafe_etl.rules import EXPECTED_FIELDS, MAX_NAME_CHARS, Layout
from cafe_etl.warehouse.base import RowCounts

# Lines that repeat an earlier line of the same file byte for byte, name and card
# included, each with the line it repeats. Lines whose hash recurs are the candidates
# (few); among them, repeats are found by the text itself, so a hash collision cannot
# make a false repeat.
_DUPLICATES = """
CREATE OR REPLACE TEMP TABLE stg_duplicate AS
WITH candidate AS (
    SELECT l.idx, l.line_no, l.raw
    FROM stg_line l
    SEMI JOIN (SELECT idx, hash(raw) AS h FROM stg_line WHERE NOT blank
               GROUP BY idx, h HAVING count(*) > 1) c ON c.idx = l.idx AND c.h = hash(l.raw)
    WHERE NOT l.blank
)
SELECT idx, line_no, first_line
FROM (SELECT idx, first_line, unnest(lines) AS line_no
      FROM (SELECT idx, min(line_no) AS first_line, list(line_no) AS lines
            FROM candidate GROUP BY idx, raw HAVING count(*) > 1))
WHERE line_no > first_line
"""

_CHECK = f"""
CREATE OR REPLACE TEMP TABLE stg_check AS
WITH row_facts AS (
    SELECT l.idx, l.line_no, l.blank, l.n_fields, l.unbalanced, l.f_when, l.f_branch, l.basket, l.f5, l.f6, l.raw,
           s.layout, s.first_data_line,
           d.first_line AS duplicate_of,
           l.sold_at,
           CASE WHEN s.layout = '{Layout.V0}' THEN l.f6 ELSE l.f5 END AS total_text,
           CASE WHEN s.layout = '{Layout.V0}' THEN l.f5 ELSE l.f6 END AS payment_text,
           to_money(total_text) AS total,
           CASE WHEN payment_word(payment_text) IN ('CASH', 'CARD') THEN payment_word(payment_text) END AS payment,
           b.missing AS branch_missing, b.branch_key, fb.branch_key AS file_branch_key,
           fb.branch_id AS file_branch_id,
           k.basket_no, k.n_items, k.items_total, k.reason AS item_reason, k.detail AS item_detail,
           c.customer_key,
           -- header rows: lines that look like one, before the file's first dated row
           CASE WHEN l.headerlike THEN l.line_no < coalesce(s.first_data_line, 2147483647) ELSE false END AS header
    FROM stg_line l
    JOIN stg_shape s USING (idx)
    LEFT JOIN stg_duplicate d ON d.idx = l.idx AND d.line_no = l.line_no
    LEFT JOIN stg_branch b ON b.idx = l.idx AND b.f_branch = l.f_branch
    LEFT JOIN stg_file_branch fb ON fb.idx = l.idx
    LEFT JOIN stg_basket k ON k.legacy = (s.layout = '{Layout.V0}') AND {{basket_match}}
    LEFT JOIN stg_customer c ON {{customer_match}}
), judged AS (
    SELECT *,
        CASE
            WHEN duplicate_of IS NOT NULL THEN 'DUPLICATE_ROW'
            WHEN unbalanced THEN 'BAD_FIELD_COUNT'
            WHEN n_fields <> {EXPECTED_FIELDS} THEN 'BAD_FIELD_COUNT'
            WHEN sold_at IS NULL OR sold_at < $earliest OR sold_at > $latest THEN 'BAD_TIMESTAMP'
            WHEN branch_missing THEN 'MISSING_BRANCH'
            WHEN CASE WHEN strlen(basket) <= 16 THEN is_missing(trim(basket, ' "')) ELSE false END
                THEN 'EMPTY_BASKET'
            WHEN CASE WHEN layout = '{Layout.V0}' THEN len(string_split(basket, ',')) % 3 <> 0 ELSE false END
                THEN 'BAD_ITEM'
            WHEN item_reason IS NOT NULL THEN item_reason
            WHEN n_items > $max_items THEN 'BAD_ITEM'
            WHEN total IS NULL OR total < 0 THEN 'BAD_TOTAL'
            WHEN abs(items_total - total) >= 0.005 THEN 'TOTAL_MISMATCH'
            WHEN payment IS NULL THEN 'BAD_PAYMENT'
            WHEN branch_key <> file_branch_key THEN 'BRANCH_MISMATCH'
        END AS failure
    FROM row_facts
)
SELECT idx, line_no, sold_at, total, payment, branch_key, basket_no, n_items, customer_key,
       CASE WHEN failure IS NULL THEN (year(sold_at) * 10000 + month(sold_at) * 100 + day(sold_at))::INTEGER
       END AS date_key,
       CASE WHEN failure IS NULL THEN (hour(sold_at) * 100 + minute(sold_at))::SMALLINT END AS time_key,
       CASE WHEN blank THEN 'blank' WHEN header THEN 'header' WHEN failure IS NOT NULL THEN 'reject'
            ELSE 'sale' END AS outcome,
       CASE WHEN NOT blank AND NOT header THEN failure END AS reason,
       -- Quarantine text is clipped: a 10 MB "row" keeps its reason, not its bulk.
       -- Sales, the most rows, leave both CASEs at their first test.
       printable(clip(CASE WHEN failure IS NULL THEN NULL WHEN blank OR header THEN NULL
            WHEN failure = 'DUPLICATE_ROW' THEN format('same bytes as line {{}}', duplicate_of)
            WHEN failure = 'BAD_FIELD_COUNT' AND unbalanced
                THEN 'the quotes do not balance (a field opened with " is never closed): fields cannot be told apart'
            WHEN failure = 'BAD_FIELD_COUNT' THEN format('{EXPECTED_FIELDS} fields expected, found {{}}', n_fields)
            WHEN failure = 'BAD_TIMESTAMP' AND is_missing(f_when) THEN 'timestamp is missing'
            WHEN failure = 'BAD_TIMESTAMP' AND sold_at IS NULL
                THEN format('timestamp ''{{}}'' is not a date and time (DD/MM/YYYY HH:MM)', f_when)
            WHEN failure = 'BAD_TIMESTAMP' AND sold_at < $earliest
                THEN format('timestamp {{}} is before {{}}', f_when, $earliest::DATE)
            WHEN failure = 'BAD_TIMESTAMP' THEN format('timestamp {{}} is in the future', f_when)
            WHEN failure = 'MISSING_BRANCH' AND is_missing(f_branch) THEN 'branch is missing'
            WHEN failure = 'MISSING_BRANCH'
                THEN format('branch ''{{}}'' is not a name (control or unreadable characters, or over '
                            || '{MAX_NAME_CHARS} characters)', left(f_branch, 40))
            WHEN failure = 'EMPTY_BASKET' THEN 'basket is empty'
            WHEN failure = 'BAD_ITEM' AND item_reason IS NULL AND layout = '{Layout.V0}'
                 AND len(string_split(basket, ',')) % 3 <> 0
                THEN format('legacy basket has {{}} cells, not size,name,price triples',
                            len(string_split(basket, ',')))
            WHEN failure = 'BAD_ITEM' AND item_reason IS NULL
                THEN format('basket has {{}} items, more than {{}}', n_items, $max_items)
            WHEN item_reason IS NOT NULL AND failure = item_reason THEN item_detail
            WHEN failure = 'BAD_TOTAL' AND is_missing(total_text) THEN 'total is missing'
            WHEN failure = 'BAD_TOTAL' AND total IS NULL THEN format('total ''{{}}'' is not an amount', total_text)
            WHEN failure = 'BAD_TOTAL' THEN format('total {{}} is negative', total_text)
            WHEN failure = 'TOTAL_MISMATCH'
                THEN format('total {{}} but the items add up to {{}}', trim(total_text), items_total)
            WHEN failure = 'BAD_PAYMENT' AND is_missing(payment_text) THEN 'payment method is missing'
            WHEN failure = 'BAD_PAYMENT'
                THEN format('payment method ''{{}}'' is not CASH or CARD', payment_text)
            WHEN failure = 'BRANCH_MISMATCH'
                THEN format('branch ''{{}}'' differs from the file''s branch ''{{}}''', f_branch, file_branch_id)
        END, $max_detail)) AS detail,
        -- The rejected row as written, without its personal data (DESIGN §3), and with
        -- control characters shown as '?' (no text column of the warehouse holds one).
        printable(clip(CASE WHEN failure IS NULL THEN NULL WHEN blank OR header THEN NULL
             WHEN n_fields = {EXPECTED_FIELDS} AND NOT unbalanced
                 THEN mask_numbers(concat_ws(',', f_when, f_branch, '', quote_field(basket), f5, f6, ''))
             ELSE array_to_string(list_transform(csv_fields(left(raw, $max_row_data * 4)),
                                                 lambda x: keep_if_plain(x)), ',')
        END, $max_row_data)) AS row_data
FROM judged
"""

# A row finds its basket and its customer by their text. Joining on a 64-bit hash of
# the text is quicker (no string compared in the join), and exact whenever no two
# distinct baskets (or customers) of the batch share a hash, and none has the hash of a
# missing value: checked for each batch, and the text is joined on otherwise.
_MATCH_BY_TEXT = {"basket_match": "k.basket = l.basket", "customer_match": "c.identity = l.identity"}
_MATCH_BY_HASH = {"basket_match": "k.basket_hash = hash(l.basket)",
                  "customer_match": "c.identity_hash = hash(l.identity)"}
_HASHES_UNIQUE = """
SELECT (SELECT count(*) = count(DISTINCT basket_hash) AND count(*) FILTER (WHERE basket_hash = hash(NULL::VARCHAR)) = 0
        FROM stg_basket)
   AND (SELECT count(*) = count(DISTINCT identity_hash)
               AND count(*) FILTER (WHERE identity_hash = hash(NULL::VARCHAR)) = 0
        FROM stg_customer)
"""

_COUNTS = """
SELECT s.idx, s.lines, s.layout, s.rows, s.rows_expected_width, s.usual_width,
       count(*) FILTER (WHERE c.outcome = 'sale') AS loaded,
       count(*) FILTER (WHERE c.outcome = 'reject') AS rejected,
       count(*) FILTER (WHERE c.outcome = 'header') AS header_lines,
       count(*) FILTER (WHERE c.outcome = 'blank') AS blank_lines,
       list(c.reason ORDER BY c.reason) FILTER (WHERE c.outcome = 'reject') AS reasons,
       min(c.sold_at) FILTER (WHERE c.outcome = 'sale') AS first_sale,
       max(c.sold_at) FILTER (WHERE c.outcome = 'sale') AS last_sale,
       any_value(fb.branch_id) AS branch_id,
       coalesce(sum(c.n_items) FILTER (WHERE c.outcome = 'sale'), 0) AS items
FROM stg_shape s
LEFT JOIN stg_check c USING (idx)
LEFT JOIN stg_file_branch fb USING (idx)
GROUP BY ALL
ORDER BY s.idx
"""


def check_sql(by_hash: bool) -> str:
    """The row checks, finding baskets and customers by hash or by text."""
    sql = _CHECK
    for name, condition in (_MATCH_BY_HASH if by_hash else _MATCH_BY_TEXT).items():
        sql = sql.replace("{" + name + "}", condition)
    return sql


# Characters of a reject's detail and of its row kept in the quarantine.
MAX_DETAIL = 500
MAX_ROW_DATA = 2000


@dataclass(frozen=True)
class FileCounts:
    idx: int
    lines: int  # lines staged by the engine
    layout: str
    rows: int  # non-blank lines
    rows_expected_width: int
    usual_width: int | None
    loaded: int
    rejected: int
    header_lines: int
    blank_lines: int
    reasons: dict[str, int]
    first_sale: datetime | None
    last_sale: datetime | None
    branch_id: str | None
    items: int = 0  # line items of the loaded sales

    @property
    def ignored(self) -> int:
        return self.header_lines + self.blank_lines

    def row_counts(self, lines_read: int, loaded: bool) -> RowCounts:
        """The file's counts as the ledger and the run's summary keep them; a file that
        fails loads nothing, though its rejects may still be quarantined."""
        return RowCounts(rows_read=lines_read, rows_loaded=self.loaded if loaded else 0, rows_rejected=self.rejected,
                         rows_ignored=self.ignored, items_loaded=self.items if loaded else 0)


def validate(engine: Engine, rules: Rules, now: datetime, duplicates: str = _DUPLICATES) -> dict[int, FileCounts]:
    """Judge every staged line; ``duplicates`` stages ``stg_duplicate`` (a slice of a
    large file finds its repeats with the earlier slices' help)."""
    engine.run(duplicates)
    engine.run(
        check_sql(by_hash=engine.rows(_HASHES_UNIQUE)[0][0]),
        {
            "earliest": datetime.combine(rules.earliest_date, datetime.min.time()),
            "latest": now + timedelta(days=rules.future_days),
            "max_items": rules.max_items_per_sale,
            "max_detail": MAX_DETAIL,
            "max_row_data": MAX_ROW_DATA,
        },
    )
    rows = engine.rows(_COUNTS)
    # The lines (and the names and card numbers in them) are not needed any more:
    # free their memory before the batch is staged and loaded.
    for table in ("stg_line", "stg_item", "stg_basket_text", "stg_duplicate", "stg_customer"):
        engine.run(f"DROP TABLE IF EXISTS {table}")
    out = {}
    for row in rows:
        (idx, lines, layout, rows, wide, usual, loaded, rejected, headers, blanks, reasons, first, last, branch,
         items) = row
        tally: dict[str, int] = {}
        for reason in reasons or ():
            tally[reason] = tally.get(reason, 0) + 1
        out[idx] = FileCounts(idx, lines, layout, rows, wide, usual, loaded, rejected, headers, blanks, tally,
                              first, last, branch, int(items))
    return out


def structural_failure(counts: FileCounts | None, lines_read: int) -> str | None:
    """Why the file as a whole cannot be read as a branch export, or None when its rows
    could each be judged (and their rejects quarantined)."""
    if lines_read == 0 or counts is None or counts.rows == 0:
        return "the file is empty"
    candidates = counts.rows - counts.header_lines
    if candidates > 0 and counts.rows_expected_width * 2 < candidates:
        share = round(100 * (candidates - counts.rows_expected_width) / candidates)
        return (f"{EXPECTED_FIELDS} fields expected, found {counts.usual_width} in {share}% of rows: "
                "not a branch export")
    if lines_read != counts.lines or counts.lines != counts.loaded + counts.rejected + counts.ignored:
        return (f"accounting check failed: {lines_read} lines read, {counts.lines} staged, "
                f"{counts.loaded} loaded + {counts.rejected} rejected + {counts.ignored} ignored")
    return None


def verdict(counts: FileCounts | None, lines_read: int) -> str | None:
    """Why the whole file fails, or None when its good rows can be loaded."""
    failure = structural_failure(counts, lines_read)
    if failure:
        return failure
    if counts.loaded == 0:
        if counts.rejected == 0:
            return "no transaction in the file (header or blank lines only)"
        summary = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.reasons.items()))
        return f"no loadable row: all {counts.rejected} rows rejected ({summary})"
    return None
