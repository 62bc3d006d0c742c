"""Whom to target (DESIGN §11): RFM scores and segments, visit frequency, weekly cohorts.

A customer is a customer key, the keyed hash of a name and card: no personal data is
read or written here. Every figure is computed in portable SQL from the facts, so
both warehouses give the same answers, and the dashboard, the API, the CLI and the
Grafana marts share this one module's definitions.

Scores: ``score(x) = 1 + floor(5 × (RANK() OVER (ORDER BY x) − 1) / n)`` with ties
taking the lowest rank; R orders by recency descending (the longest-ago last sale
first), F by the number of sales, M by revenue. The segment follows from (R, F).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from cafe_etl.analytics import report
from cafe_etl.analytics.report import Filters, Scope, branch_clause, date_key, from_key, money
from cafe_etl.errors import BadRequest
from cafe_etl.warehouse.base import Reader

MAX_FREQUENCY = 10  # the histogram's last bucket: 10 or more sales


@dataclass(frozen=True)
class Segment:
    name: str
    meaning: str  # one line: who they are, and what to do
    recency: tuple[int, ...]  # the R scores it takes
    frequency: tuple[int, ...]  # the F scores it takes


# DESIGN §11, in its order. Every (R, F) pair falls in exactly one segment.
SEGMENTS = (
    Segment("Champions", "bought recently and often: reward them, ask for reviews", (5,), (4, 5)),
    Segment("Loyal", "buy often, a little less recently: offer loyalty perks", (3, 4), (4, 5)),
    Segment("Potential Loyalists", "recent, a few sales: a membership or a second-visit offer", (4, 5), (2, 3)),
    Segment("Recent One-Timers", "first and only sale was very recent: welcome them back", (5,), (1,)),
    Segment("Promising", "one recent sale: build the habit", (4,), (1,)),
    Segment("Need Attention", "middling recency and frequency: a limited-time offer", (3,), (3,)),
    Segment("About to Sleep", "few sales, going quiet: a reminder before they lapse", (3,), (1, 2)),
    Segment("At Risk", "used to buy regularly, not lately: win them back", (1, 2), (3, 4)),
    Segment("Can't Lose", "the most frequent buyers, gone quiet: reach out personally", (1, 2), (5,)),
    Segment("Hibernating", "few sales, long ago: a low-cost nudge, or let go", (1, 2), (1, 2)),
)
SEGMENT_NAMES = tuple(s.name for s in SEGMENTS)
MEANING = {s.name: s.meaning for s in SEGMENTS}


class UnknownSegment(BadRequest):
    pass


def segment_named(name: str) -> Segment:
    """A segment by name, any case; a clear error listing them otherwise."""
    for segment in SEGMENTS:
        if segment.name.lower() == " ".join(name.split()).lower():
            return segment
    raise UnknownSegment(f"unknown segment {name!r}; the segments are: {', '.join(SEGMENT_NAMES)}")


def _segment_case(r: str, f: str) -> str:
    """The segment of scores ``r`` and ``f`` as a SQL CASE (names are constants, not input)."""
    whens = " ".join(
        f"WHEN {r} IN ({', '.join(map(str, s.recency))}) AND {f} IN ({', '.join(map(str, s.frequency))}) "
        f"THEN '{s.name.replace(chr(39), chr(39) * 2)}'" for s in SEGMENTS)
    return f"CASE {whens} END"


def _score(rank: str) -> str:
    """1 + floor(5 × (rank − 1) / n) in integers: exact on every warehouse."""
    return f"1 + CAST((5 * ({rank} - 1) - (5 * ({rank} - 1)) % n) / n AS INTEGER)"


def _rank_of(column: str, rows: str = "per_customer", customers: str = "count(*)") -> str:
    """RANK() OVER (ORDER BY column) for each distinct value of ``column``: 1 + how many
    customers have a smaller value. Counted over the values (a few thousand at most)
    rather than by sorting every customer; ``rows`` may stand for several customers
    each (``customers`` says how many a group of them holds)."""
    return f"""SELECT {column}, CAST(1 + coalesce(sum({customers}) OVER (
                   ORDER BY {column} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS BIGINT) AS rank_
               FROM {rows} GROUP BY {column}"""


def _per_customer(where: str) -> str:
    """The CTE ``per_customer``: one row per customer with a sale in scope, with sales,
    revenue, first and last day (keys). Parameters: the scope's."""
    return f"""per_customer AS MATERIALIZED (
    SELECT f.customer_key, count(*) AS sales, sum(f.total) AS revenue,
           min(f.date_key) AS first_key, max(f.date_key) AS last_key
    FROM fact_sale f
    WHERE f.customer_key IS NOT NULL AND {where}
    GROUP BY f.customer_key
)"""


def _scored(where: str) -> str:
    """CTEs ending in ``scored_customer``: ``per_customer`` with the scores and the
    segment of each customer. R ranks by recency descending, which is the last sale's
    day ascending. Parameters: the scope's."""
    return f"""
WITH {_per_customer(where)}, total AS (SELECT count(*) AS n FROM per_customer),
r_rank AS ({_rank_of("last_key")}),
f_rank AS ({_rank_of("sales")}),
m_rank AS ({_rank_of("revenue")}),
scored AS (
    SELECT p.*, {_score("r.rank_")} AS r, {_score("f.rank_")} AS f, {_score("m.rank_")} AS m
    FROM per_customer p
    JOIN r_rank r ON r.last_key = p.last_key
    JOIN f_rank f ON f.sales = p.sales
    JOIN m_rank m ON m.revenue = p.revenue
    CROSS JOIN total
), scored_customer AS (
    SELECT s.*, {_segment_case("s.r", "s.f")} AS segment FROM scored s
)"""


def resolve(reader: Reader, filters: Filters) -> Scope:
    """The scope: the period asked for; without a first day, the last 28 days with
    sales (the dashboard's default too)."""
    return report.recent(reader, filters)


def build(reader: Reader, filters: Filters) -> dict:
    """The ``customers`` answer in DESIGN §11's shape, money as Decimal with 2 places."""
    scope = resolve(reader, filters)
    period = {"from": scope.first.isoformat() if scope.first else None,
              "to": scope.last.isoformat() if scope.last else None}
    if scope.empty:
        return {"period": period, "customers": {"distinct": 0, "new": 0, "returning": 0, "repeat": 0},
                "segments": _segments({}), "frequency": _frequency({}), "cohorts": []}
    by_segment, by_frequency, counts, weekly_cohorts = _tallies(reader, scope, with_cohorts=True)
    return {
        "period": period,
        "customers": counts,
        "segments": _segments(by_segment),
        "frequency": _frequency(by_frequency),
        "cohorts": weekly_cohorts,
    }


# Customers alike, for the whole history, from their sales to date: every one of them
# is new (their first sale is inside it), and repeats when their first and last days differ.
_ALIKE_TO_DATE = """alike AS MATERIALIZED (
    SELECT d.date_key AS last_key, a.sales, a.again, 1 AS fresh, a.customers, a.revenue
    FROM (SELECT last_seen, sales, CASE WHEN first_seen < last_seen THEN 1 ELSE 0 END AS again,
                 count(*) AS customers, sum(revenue) AS revenue
          FROM dim_customer
          GROUP BY last_seen, sales, CASE WHEN first_seen < last_seen THEN 1 ELSE 0 END) a
    JOIN dim_date d ON d.date = a.last_seen
)"""


def _first_monday(scope: Scope) -> date:
    return scope.first + timedelta(days=(7 - scope.first.weekday()) % 7)


def _tallies(reader: Reader, scope: Scope, with_cohorts: bool = False,
             with_new: bool = True) -> tuple[dict, dict, dict | None, list]:
    """(segment → [customers, sales, revenue], sales bucket → customers, §8's counts,
    cohorts). New: first sale ever on or after the scope's first day; repeat: sales on
    two or more days (the first and last differ). Without ``with_new`` no customer is
    matched against dim_customer, and there are no counts (None). For the whole history
    (``report.whole_history``), customers are counted from their sales to date in
    dim_customer and no sale is read. Cohorts (``with_cohorts``): ``cohorts``."""
    where, params = scope.where("f")
    to_date = report.whole_history(reader, scope)
    bucket = f"CASE WHEN s.sales >= {MAX_FREQUENCY} THEN {MAX_FREQUENCY} ELSE s.sales END"
    first_seen = """
          LEFT JOIN (SELECT customer_key, first_seen FROM dim_customer WHERE first_seen >= ?) c
                 ON c.customer_key = p.customer_key""" if with_new else ""
    # The segments follow from R and F alone, so customers alike in their last day,
    # sales, repeat and new are counted together (a few thousand kinds of customer
    # rather than a million), and ranked as many.
    alike = _ALIKE_TO_DATE if to_date else f"""{_per_customer(where)}, alike AS MATERIALIZED (
    SELECT a.last_key, a.sales, a.again, a.fresh, count(*) AS customers, sum(a.revenue) AS revenue
    FROM (SELECT p.last_key, p.sales, p.revenue,
                 CASE WHEN p.first_key < p.last_key THEN 1 ELSE 0 END AS again,
                 {"CASE WHEN c.first_seen IS NULL THEN 0 ELSE 1 END" if with_new else "0"} AS fresh
          FROM per_customer p{first_seen}) a
    GROUP BY a.last_key, a.sales, a.again, a.fresh
)"""
    sql = f"""
WITH {alike}, total AS (SELECT CAST(sum(customers) AS BIGINT) AS n FROM alike),
r_rank AS ({_rank_of("last_key", "alike", "sum(customers)")}),
f_rank AS ({_rank_of("sales", "alike", "sum(customers)")}),
scored AS (
    SELECT a.*, {_score("r.rank_")} AS r, {_score("f.rank_")} AS f
    FROM alike a
    JOIN r_rank r ON r.last_key = a.last_key
    JOIN f_rank f ON f.sales = a.sales
    CROSS JOIN total
), segmented AS (
    SELECT s.*, {_segment_case("s.r", "s.f")} AS segment FROM scored s
)
SELECT s.segment, {bucket}, sum(s.customers), sum(s.sales * s.customers), sum(s.revenue),
       sum(s.fresh * s.customers), sum(s.again * s.customers)
FROM segmented s
GROUP BY s.segment, {bucket}"""
    values = [] if to_date else [*params, *([scope.first] if with_new else [])]
    segments: dict[str, list] = {}
    frequency: dict[int, int] = {}
    distinct = new = repeat = 0
    for segment, n, customers, sales, revenue, fresh, again in reader.query(sql, values):
        tally = segments.setdefault(segment, [0, 0, Decimal(0)])
        tally[0] += int(customers)
        tally[1] += int(sales)
        tally[2] += Decimal(revenue)
        frequency[int(n)] = frequency.get(int(n), 0) + int(customers)
        distinct, new, repeat = distinct + int(customers), new + int(fresh), repeat + int(again)
    counts = ({"distinct": distinct, "new": new, "returning": distinct - new, "repeat": repeat}
              if with_new or to_date else None)
    return segments, frequency, counts, cohorts(reader, scope) if with_cohorts else []


def _segments(tallies: dict) -> list[dict]:
    out = []
    for s in SEGMENTS:
        customers, sales, revenue = tallies.get(s.name, (0, 0, 0))
        out.append({"segment": s.name, "customers": customers, "sales": sales, "revenue": money(revenue)})
    return out


def _frequency(tallies: dict) -> list[dict]:
    labels = [(str(n), n) for n in range(1, MAX_FREQUENCY)] + [(f"{MAX_FREQUENCY}+", MAX_FREQUENCY)]
    return [{"sales": label, "customers": tallies.get(n, 0)} for label, n in labels]


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


# Each customer's first sale ever and the Monday of its week. ``dim_customer.first_seen``
# is kept exact by every load (warehouse/load_sql.py), so no fact is scanned for it.
_FIRST_WEEK = """first_week AS (
    SELECT c.customer_key, c.first_seen, c.first_seen - (d.weekday - 1) AS monday
    FROM dim_customer c JOIN dim_date d ON d.date = c.first_seen
    WHERE c.first_seen BETWEEN ? AND ?
)"""


def cohorts(reader: Reader, scope: Scope) -> list[dict]:
    """Weekly cohorts (chain-wide): customers by the Monday of the week of their first
    sale ever, for Mondays in scope; ``retention[k]``: the share of the cohort with a
    sale in week k after, for every week that ends on or before the scope's last day.
    A cohort is every customer whose first week it is, as DESIGN §11 defines it: in a
    week that the scope ends inside, that includes first sales after its last day."""
    first_monday = _first_monday(scope)
    if not scope.chain_wide or first_monday > scope.last:
        return []  # cohorts are chain-wide
    last_monday = _monday(scope.last)
    if reader.keeps_customer_rollups:
        # Each customer's weeks with a sale, with their cohort, as loads keep them.
        rows = reader.query(
            f"""WITH {_FIRST_WEEK}
                SELECT monday, CAST(-1 AS INTEGER) AS week, count(*) FROM first_week GROUP BY monday
                UNION ALL
                SELECT cohort, CAST((monday - cohort) / 7 AS INTEGER), count(*) FROM agg_customer_week
                WHERE cohort BETWEEN ? AND ? AND monday <= ?
                GROUP BY cohort, monday""",
            [first_monday, last_monday + timedelta(days=6), first_monday, last_monday, last_monday])
        return _cohort_rows(_by_cohort(rows), scope.last)
    # Day differences are whole weeks by (x - x % 7) / 7: exact on every warehouse.
    weeks = "((d.date - c.monday) - (d.date - c.monday) % 7) / 7"
    rows = reader.query(
        f"""WITH {_FIRST_WEEK}, active AS (
               SELECT DISTINCT c.customer_key, c.monday, CAST({weeks} AS INTEGER) AS week
               FROM fact_sale f
               JOIN first_week c ON c.customer_key = f.customer_key
               JOIN dim_date d ON d.date_key = f.date_key
               WHERE f.date_key BETWEEN ? AND ?
           )
           SELECT monday, CAST(-1 AS INTEGER) AS week, count(*) FROM first_week GROUP BY monday
           UNION ALL
           SELECT monday, week, count(*) FROM active GROUP BY monday, week""",
        [first_monday, last_monday + timedelta(days=6), date_key(first_monday), date_key(scope.last)])
    return _cohort_rows(_by_cohort(rows), scope.last)


def _by_cohort(rows: list[tuple]) -> dict[date, dict[int, int]]:
    """{Monday: {-1: the cohort's size, k: its customers active in week k}} from rows of
    (Monday, k or -1, customers)."""
    found: dict[date, dict[int, int]] = {}
    for monday, week, customers in rows:
        found.setdefault(monday, {})[int(week)] = int(customers)
    return found


def _cohort_rows(found: dict[date, dict[int, int]], last: date) -> list[dict]:
    """Cohorts from {Monday: {-1: the cohort's size, k: its customers active in week k}},
    with retention for every week k that ends on or before ``last``."""
    out = []
    for monday in sorted(found):
        size = found[monday].get(-1, 0)
        weeks_ended = ((last - monday).days + 1) // 7
        out.append({"week": monday.isoformat(), "customers": size,
                    "retention": [round(found[monday].get(k, 0) / size, 4) if size else 0.0
                                  for k in range(weeks_ended)]})
    return out


# Each customer with a sale in scope (``{where}`` on ``f``), once per week they bought in.
_VISITS = """visits AS (
    SELECT DISTINCT f.customer_key, d.date - (d.weekday - 1) AS monday
    FROM fact_sale f JOIN dim_date d ON d.date_key = f.date_key
    WHERE f.customer_key IS NOT NULL AND {where}
)"""


def _weekly_customers(reader: Reader, scope: Scope) -> dict[date, int]:
    """Customers with a sale in scope per week, chain-wide. Weeks the scope holds whole
    (or whose days outside it have no sales) are counted from each customer's weeks,
    as loads keep them; the days of a week the scope cuts, from the sales."""
    cut = [scope]
    found: dict[date, int] = {}
    if reader.keeps_customer_rollups:
        low, high = report.sales_window(reader)
        week = timedelta(days=7)
        start = _monday(scope.first) + (week if scope.first.weekday() and scope.first > low else timedelta(0))
        end = _monday(scope.last) - (week if scope.last.weekday() < 6 and scope.last < high else timedelta(0))
        if start <= end:
            found = {monday: int(n) for monday, n in reader.query(
                "SELECT monday, count(*) FROM agg_customer_week WHERE monday BETWEEN ? AND ? GROUP BY monday",
                [start, end])}
            cut = [Scope(first, last) for first, last in ((scope.first, start - timedelta(days=1)),
                                                          (end + week, scope.last)) if first <= last]
    for part in cut:
        where, params = part.where("f")
        found |= {monday: int(n) for monday, n in reader.query(
            f"WITH {_VISITS.format(where=where)} SELECT monday, count(*) FROM visits GROUP BY monday", params)}
    return found


def weekly(reader: Reader, scope: Scope) -> list[dict]:
    """New and returning customers per week (Monday to Sunday, cut to the scope): the
    §8 counts of each week. A customer's first sale ever falls in one week only, so
    the weeks' ``new`` add up to the scope's. For all branches, a week's new customers
    are those first seen in it (their first sale is one of its sales): counted from
    the dimension, without matching every visit against it."""
    if scope.chain_wide:
        new = dict(reader.query(f"WITH {_FIRST_WEEK} SELECT monday, count(*) FROM first_week GROUP BY monday",
                                [scope.first, scope.last]))
        visits = _weekly_customers(reader, scope)
        rows = [(monday, visits.get(monday, 0), new.get(monday, 0)) for monday in visits.keys() | new.keys()]
    else:
        where, params = scope.where("f")
        rows = reader.query(
            f"""WITH {_FIRST_WEEK}, {_VISITS.format(where=where)}
                SELECT v.monday, count(*), sum(CASE WHEN n.monday = v.monday THEN 1 ELSE 0 END)
                FROM visits v LEFT JOIN first_week n ON n.customer_key = v.customer_key
                GROUP BY v.monday""",
            [scope.first, scope.last, *params])
    found = {monday: (int(total), int(new)) for monday, total, new in rows}
    out = []
    monday = _monday(scope.first)
    while monday <= scope.last:
        total, new = found.get(monday, (0, 0))
        out.append({"week": monday.isoformat(), "from": max(monday, scope.first).isoformat(),
                    "to": min(monday + timedelta(days=6), scope.last).isoformat(),
                    "customers": total, "new": new, "returning": total - new})
        monday += timedelta(days=7)
    return out


def repeat_by_branch(reader: Reader, scope: Scope) -> list[dict]:
    """Per branch (DESIGN §11): customers with a sale there in scope, and how many of
    them bought there on two or more days: the branch's repeat rate."""
    if report.whole_history(reader, Scope(scope.first, scope.last)):
        # Each customer's first and last day at each branch, as loads keep them.
        params: list = []
        rows = reader.query(
            f"""SELECT b.name, count(*), sum(CASE WHEN a.first_key < a.last_key THEN 1 ELSE 0 END)
                FROM agg_customer_branch a JOIN dim_branch b ON b.branch_key = a.branch_key
                WHERE 1 = 1{branch_clause("a", scope.branch_keys, params)}
                GROUP BY b.branch_key, b.name""", params)
        return _repeat_rows(rows)
    where, params = scope.where("f")
    rows = reader.query(
        f"""SELECT b.name, count(*), sum(CASE WHEN c.days >= 2 THEN 1 ELSE 0 END)
            FROM (SELECT f.branch_key, f.customer_key,
                         CASE WHEN min(f.date_key) < max(f.date_key) THEN 2 ELSE 1 END AS days
                  FROM fact_sale f WHERE f.customer_key IS NOT NULL AND {where}
                  GROUP BY f.branch_key, f.customer_key) c
            JOIN dim_branch b ON b.branch_key = c.branch_key
            GROUP BY b.branch_key, b.name""", params)
    return _repeat_rows(rows)


def _repeat_rows(rows: list[tuple]) -> list[dict]:
    out = [{"branch": name, "customers": int(total), "repeat_customers": int(repeat),
            "repeat_rate_pct": round(100 * int(repeat) / int(total), 1) if total else 0.0}
           for name, total, repeat in rows]
    return sorted(out, key=lambda r: (-r["repeat_rate_pct"], r["branch"]))


def rfm(reader: Reader, scope: Scope) -> dict:
    """The segments (with what each means) and the sales-per-customer histogram."""
    by_segment, by_frequency, _, _ = _tallies(reader, scope, with_new=False)
    return {"segments": [s | {"meaning": MEANING[s["segment"]]} for s in _segments(by_segment)],
            "frequency": _frequency(by_frequency)}


def target_list(reader: Reader, filters: Filters, segment: Segment) -> tuple[Scope, list[dict]]:
    """The customers of one segment, for a CRM to match by key: their scores, recency,
    sales and revenue in scope, and the days of their first and last sale in scope.
    Keys only: never a name or a card."""
    scope = resolve(reader, filters)
    if scope.empty:
        return scope, []
    where, params = scope.where("f")
    rows = reader.query(
        f"""{_scored(where)}
            SELECT customer_key, r, f, m, last_key, sales, revenue, first_key
            FROM scored_customer WHERE segment = ?
            ORDER BY revenue DESC, customer_key""",
        [*params, segment.name])
    out = []
    for key, r, f, m, last_key, sales, revenue, first_key in rows:
        last = from_key(last_key)
        out.append({"customer_key": key, "segment": segment.name, "r": r, "f": f, "m": m,
                    "recency_days": (scope.last - last).days, "sales": int(sales), "revenue": money(revenue),
                    "first_sale": from_key(first_key).isoformat(), "last_sale": last.isoformat()})
    return scope, out


TARGET_COLUMNS = ("customer_key", "segment", "r", "f", "m", "recency_days", "sales", "revenue", "first_sale",
                  "last_sale")
