"""What is changing (DESIGN §11): movers of the last week and days out of the ordinary.

**Movers** compare the 7 days ending ``to`` with the mean of the four 7-day windows
before them: branches by transactions, products by quantity (chain-wide, or within
one branch). Whole weeks on both sides, so the weekday pattern cancels out. Under
"nothing changed" the week's count ``c``, given the count ``c + b`` of the week and
the baseline weeks together, is binomial with p = 1 / (1 + weeks) (the conditional
test of two Poisson rates); its exact two-sided p-values (twice the smaller tail,
analytics/exact_tests.py) are adjusted by Benjamini–Hochberg
over every candidate of a kind. A mover has |change| ≥ ``min_change`` percent and
q ≤ 0.05. A branch or product with no baseline (new) has no change to measure and is
not a candidate. Where the warehouse holds fewer than four weeks before the week,
the baseline is the mean of the whole weeks it holds (``week.baseline_weeks``).

**Anomalies** are branch-days of the week whose revenue lies outside the range the
branch's own history expects for that weekday: expected = the median revenue of the
same weekday over the eight weeks before (at least three such days with sales);
range = expected × exp(±3.5σ), σ the robust spread (1.4826 × MAD, at least 5%) of the
branch's log deviations from its weekday medians over those weeks, widened for the
error of the median itself (15% where fewer than four of a weekday are known). A
branch-day with no sales where the history expects some is ``missing``; a low day
whose last sale came two or more hours before the branch's usual last hour is
``short``: the signature of a partial till export, also an operations signal.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import date, timedelta

from cafe_etl.analytics import report
from cafe_etl.analytics.exact_tests import binomial_two_sided_many
from cafe_etl.analytics.report import Filters, branch_clause, date_key, from_key, money
from cafe_etl.analytics.together import benjamini_hochberg
from cafe_etl.warehouse.base import Reader

WEEK = 7
BASELINE_WEEKS = 4
HISTORY_WEEKS = 8  # behind an anomaly's expected range
DEFAULT_MIN_CHANGE = 20.0
SIGNIFICANCE = 0.05
Z = 3.5  # half-width of the expected range, in robust standard deviations
MIN_SAME_WEEKDAYS = 3
SPREAD_FLOOR = 0.05  # no range narrower than about ±17% (3.5 × 5%): a till day is never that regular
WIDE_SPREAD = 0.15  # where the history is too short to measure the spread
MIN_SPREAD_DAYS = 4  # of a weekday, to measure the spread (of three, one always sits on the median)
SHORT_HOURS = 2  # a low day that stopped this many hours early is short
ANOMALY_KINDS = ("missing", "short", "low", "high")
SUSPECT_KINDS = ("short", "missing")  # days that point at the till export rather than at trade


@dataclass(frozen=True)
class Week:
    first: date
    last: date
    baseline_weeks: int
    branch_keys: tuple[int, ...] | None  # None: the whole chain

    @property
    def baseline_first(self) -> date:
        return self.first - timedelta(days=WEEK * self.baseline_weeks)


def resolve(reader: Reader, last: date | None, branch: str | tuple[str, ...] | None) -> Week | None:
    """The week ending ``last`` (default: the last day with sales) and how many whole
    baseline weeks before it hold sales; None for an empty warehouse."""
    scope = report.resolve(reader, Filters(None, last, branch))
    if scope.empty:
        return None
    low, _ = report.sales_window(reader)
    first = scope.last - timedelta(days=WEEK - 1)
    held = 0 if low is None else max(0, (first - low).days // WEEK)
    return Week(first, scope.last, min(BASELINE_WEEKS, held), scope.branch_keys)


def describe(week: Week | None) -> dict:
    if week is None:
        return {"from": None, "to": None, "baseline_weeks": 0}
    return {"from": week.first.isoformat(), "to": week.last.isoformat(), "baseline_weeks": week.baseline_weeks}


def build(reader: Reader, last: date | None = None, branch: str | tuple[str, ...] | None = None,
          min_change: float = DEFAULT_MIN_CHANGE) -> dict:
    week = resolve(reader, last, branch)
    if week is None:
        return {"week": describe(None), "movers": [], "anomalies": []}
    return {"week": describe(week), "movers": movers(reader, week, min_change), "anomalies": anomalies(reader, week)}


# Movers ---------------------------------------------------------------------------


def movers(reader: Reader, week: Week, min_change: float = DEFAULT_MIN_CHANGE) -> list[dict]:
    if week.baseline_weeks == 0:
        return []
    found = _judge(_branch_counts(reader, week), week, min_change) + _judge(_product_counts(reader, week), week,
                                                                            min_change)
    return sorted(found, key=lambda m: (m["kind"], -abs(m["change_pct"]), m["branch"] or "", m["name"] or "",
                                        m["size"] or "", m["flavour"] or ""))


def daily(reader: Reader, week: Week, found: list[dict]) -> dict:
    """Each mover's count per day over its baseline weeks and the week (the sparklines of
    the dashboard): ``{"dates": [...], "series": [[...], ...]}`` in the order of ``found``."""
    first = week.baseline_first
    dates = [first + timedelta(days=k) for k in range((week.last - first).days + 1)]
    where, params = "a.date_key BETWEEN ? AND ?", [date_key(first), date_key(week.last)]
    where += branch_clause("a", week.branch_keys, params)
    counts: dict[tuple, int] = {}
    if any(m["kind"] == "branch" for m in found):
        for name, key, n in reader.query(f"""SELECT b.name, a.date_key, sum(a.transactions) FROM agg_sale_hour a
                                             JOIN dim_branch b ON b.branch_key = a.branch_key WHERE {where}
                                             GROUP BY b.name, a.date_key""", params):
            counts[("branch", name, None, None, None, key)] = int(n)
    if any(m["kind"] == "product" for m in found):
        for size, name, flavour, key, n in reader.query(
                f"""SELECT p.size, p.name, p.flavour, a.date_key, sum(a.quantity) FROM agg_product_day a
                    JOIN dim_product p ON p.product_key = a.product_key WHERE {where}
                    GROUP BY p.size, p.name, p.flavour, a.date_key""", params):
            counts[("product", None, size, name, flavour, key)] = int(n)
    series = []
    for m in found:
        who = (m["kind"], m["branch"] if m["kind"] == "branch" else None, m["size"], m["name"], m["flavour"])
        series.append([counts.get((*who, date_key(day)), 0) for day in dates])
    return {"dates": [day.isoformat() for day in dates], "series": series}


def _counts_sql(table: str, measure: str, group: str, week: Week) -> tuple[str, list]:
    where = "a.date_key BETWEEN ? AND ?"
    params: list = [date_key(week.first), date_key(week.baseline_first), date_key(week.last)]
    where += branch_clause("a", week.branch_keys, params)
    return (f"""SELECT {group},
                   coalesce(sum(CASE WHEN a.date_key >= ? THEN a.{measure} ELSE 0 END), 0),
                   coalesce(sum(a.{measure}), 0)
               FROM {table} a WHERE {where} GROUP BY {group}""", params)


def _branch_counts(reader: Reader, week: Week) -> list[tuple[dict, int, int]]:
    sql, params = _counts_sql("agg_sale_hour", "transactions", "a.branch_key", week)
    names = dict(reader.query("SELECT branch_key, name FROM dim_branch"))
    return [(_who("branch", names[key]), int(current), int(both) - int(current))
            for key, current, both in reader.query(sql, params)]


def _product_counts(reader: Reader, week: Week) -> list[tuple[dict, int, int]]:
    sql, params = _counts_sql("agg_product_day", "quantity", "a.product_key", week)
    products = {key: (size, name, flavour) for key, size, name, flavour
                in reader.query("SELECT product_key, size, name, flavour FROM dim_product")}
    branch = None  # chain-wide, or within several branches
    if week.branch_keys is not None and len(week.branch_keys) == 1:
        branch = reader.scalar("SELECT name FROM dim_branch WHERE branch_key = ?", list(week.branch_keys))
    return [(_who("product", branch, *products[key]), int(current), int(both) - int(current))
            for key, current, both in reader.query(sql, params)]


def _who(kind: str, branch: str | None, size: str | None = None, name: str | None = None,
         flavour: str | None = None) -> dict:
    return {"kind": kind, "branch": branch, "size": size, "name": name, "flavour": flavour}


def _judge(counts: list[tuple[dict, int, int]], week: Week, min_change: float) -> list[dict]:
    """Movers among one kind's candidates: the test, the adjustment, the two thresholds."""
    candidates = [(who, current, base) for who, current, base in counts if base > 0]
    if not candidates:
        return []
    share = 1 / (1 + week.baseline_weeks)  # of the week's and baseline's count, the week's if nothing changed
    p_values = binomial_two_sided_many([now for _, now, _ in candidates], [now + base for _, now, base in candidates],
                                       share)
    found = []
    for (who, now, base), q in zip(candidates, benjamini_hochberg(p_values), strict=True):
        baseline = base / week.baseline_weeks
        change = 100 * (now - baseline) / baseline
        if abs(change) >= min_change and q <= SIGNIFICANCE:
            found.append({**who, "current": now, "baseline": round(baseline, 2), "change_pct": round(change, 1),
                          "q_value": float(f"{q:.4g}")})
    return found


# Anomalies ------------------------------------------------------------------------


@dataclass(frozen=True)
class BranchDay:
    revenue: float
    last_hour: int


def anomalies(reader: Reader, week: Week) -> list[dict]:
    history_first = week.first - timedelta(days=WEEK * HISTORY_WEEKS)
    where = "a.date_key BETWEEN ? AND ?"
    params: list = [date_key(history_first), date_key(week.last)]
    where += branch_clause("a", week.branch_keys, params)
    # Revenue as a double: a day's sum of pennies is exact in one, and thousands of
    # Decimals cost more to fetch than the whole query takes.
    rows = reader.query(f"""SELECT a.branch_key, a.date_key, CAST(sum(a.revenue) AS DOUBLE PRECISION), max(a.hour)
                            FROM agg_sale_hour a WHERE {where} GROUP BY a.branch_key, a.date_key""", params)
    names = dict(reader.query("SELECT branch_key, name FROM dim_branch"))
    calendar: dict[int, date] = {}
    days: dict[str, dict[date, BranchDay]] = {}
    for key, day_key, revenue, last_hour in rows:
        day = calendar.get(day_key) or calendar.setdefault(day_key, from_key(day_key))
        days.setdefault(names[key], {})[day] = BranchDay(revenue, last_hour)
    found = []
    for name in sorted(days):
        found.extend(_branch_anomalies(name, days[name], week))
    return sorted(found, key=lambda a: (a["date"], a["branch"]))


def _branch_anomalies(name: str, days: dict[date, BranchDay], week: Week) -> list[dict]:
    history = {d: v for d, v in days.items() if d < week.first}
    if not history:
        return []  # a new branch has no usual day yet
    by_weekday = _by_weekday(history)
    medians = _weekday_medians(by_weekday)
    spread = _spread(by_weekday)
    usual_close = statistics.median(v.last_hour for v in history.values())
    found = []
    for offset in range(WEEK):
        day = week.first + timedelta(days=offset)
        expected = medians.get(day.weekday())
        if expected is None:
            continue  # too few of this weekday with sales (or the branch does not open then)
        low, high = expected * math.exp(-Z * spread), expected * math.exp(Z * spread)
        seen = days.get(day)
        revenue = seen.revenue if seen else 0.0
        if low <= revenue <= high:
            continue
        if seen is None:
            kind = "missing"
        elif revenue > high:
            kind = "high"
        else:
            kind = "short" if seen.last_hour <= usual_close - SHORT_HOURS else "low"
        found.append({"branch": name, "date": day.isoformat(), "revenue": money(round(revenue, 2)),
                      "expected": money(expected), "expected_low": money(low), "expected_high": money(high),
                      "kind": kind})
    return found


def _by_weekday(history: dict[date, BranchDay]) -> dict[int, list[float]]:
    """Each weekday's revenues, Monday 0."""
    by_weekday: dict[int, list[float]] = {}
    for day, value in history.items():
        by_weekday.setdefault(day.weekday(), []).append(value.revenue)
    return by_weekday


def _weekday_medians(by_weekday: dict[int, list[float]]) -> dict[int, float]:
    return {wd: statistics.median(values) for wd, values in by_weekday.items() if len(values) >= MIN_SAME_WEEKDAYS}


def _spread(by_weekday: dict[int, list[float]]) -> float:
    """The robust σ of a day's log revenue about its expected value: 1.4826 × the median
    absolute log deviation from the same weekday's median, widened for the error of
    that median itself (its variance is about π/2 · σ² / n for n days). Days without
    revenue have no logarithm and are left out."""
    deviations, counts = [], []
    for all_values in by_weekday.values():
        values = [v for v in all_values if v > 0]
        if len(values) < MIN_SPREAD_DAYS:
            continue
        centre = statistics.median(values)
        deviations.extend(math.log(value / centre) for value in values)
        counts.append(len(values))
    if len(deviations) < 2 * WEEK:
        return WIDE_SPREAD
    sigma = 1.4826 * statistics.median(abs(d) for d in deviations)
    n = statistics.median(counts)
    return max(SPREAD_FLOOR, sigma * math.sqrt(n / (n - 1)) * math.sqrt(1 + math.pi / 2 / n))
