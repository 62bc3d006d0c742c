"""The questions behind the dashboard's business pages: what sells, where, when, to whom.

Each function takes a resolved ``Scope`` (a period and perhaps one branch) and answers
with plain data for one chart. Queries are portable SQL with bound parameters, read
through the warehouse's gateway; ordering of ties is fixed here, in Python, so every
backend draws the same chart.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

from cafe_etl.analytics import report
from cafe_etl.analytics.report import Scope, date_key, money
from cafe_etl.categories import UNCATEGORISED
from cafe_etl.warehouse.base import Reader

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TREND_WINDOW = 7  # days in the moving average beside daily revenue


def product_label(size: str | None, name: str, flavour: str | None) -> str:
    """How a till writes the item: ``Large Latte``, ``Regular Flavoured latte - Hazelnut``."""
    label = f"{size} {name}" if size else name
    return f"{label} - {flavour}" if flavour else label


def _ratio(numerator, denominator, places: str = "0.01") -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(Decimal(places))


def _change(now, before) -> float | None:
    """Relative change in percent, or None when there is nothing to compare with."""
    if not before:
        return None
    return round(float((Decimal(now) - Decimal(before)) / Decimal(before)) * 100, 1) + 0.0  # never -0.0


def previous(scope: Scope) -> Scope:
    """The period of the same length that ends the day before ``scope`` starts."""
    length = (scope.last - scope.first).days + 1
    last = scope.first - timedelta(days=1)
    return Scope(last - timedelta(days=length - 1), last, scope.branch_keys)


def _kpis(reader: Reader, scope: Scope) -> dict:
    where, params = scope.where("a")
    tx, items, revenue = reader.query(
        f"""SELECT coalesce(sum(a.transactions), 0), coalesce(sum(a.items), 0), coalesce(sum(a.revenue), 0)
            FROM agg_sale_hour a WHERE {where}""", params)[0]
    return {"revenue": money(revenue), "transactions": int(tx), "items": int(items),
            "average_basket_value": _ratio(revenue, tx), "average_basket_size": _ratio(items, tx)}


# Overview ---------------------------------------------------------------------

def overview(reader: Reader, scope: Scope) -> dict:
    """Headline figures, each against the previous period of the same length."""
    before_scope = previous(scope)
    now, before = _kpis(reader, scope), _kpis(reader, before_scope)
    figures = {name: {"value": value, "previous": before[name], "change_pct": _change(value or 0, before[name])}
               for name, value in now.items()}
    return {"previous_period": {"from": before_scope.first.isoformat(), "to": before_scope.last.isoformat()},
            "figures": figures}


GRAINS = ("day", "week", "month")


def bucket(day: date, grain: str) -> date:
    """The first day of ``day``'s bucket: itself, its week's Monday, its month's first."""
    if grain == "week":
        return day - timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    return day


def regrain(series: list[dict], grain: str, sums: tuple[str, ...], key: str = "date") -> list[dict]:
    """Daily rows added up per week or month (named by the bucket's first day; the
    first and last buckets may be cut by the period)."""
    if grain == "day":
        return series
    out: dict[str, dict] = {}
    for row in series:
        start = bucket(date.fromisoformat(row[key]), grain).isoformat()
        total = out.setdefault(start, {key: start, **{name: 0 for name in sums}})
        for name in sums:
            total[name] += row[name]
    return list(out.values())


def revenue_over_time(reader: Reader, scope: Scope, grain: str = "day") -> list[dict]:
    """Revenue and transactions per day (with the trailing 7-day average), week or month."""
    daily = daily_revenue(reader, scope)
    if grain == "day":
        return daily
    return regrain(daily, grain, ("revenue", "transactions"))


def daily_revenue(reader: Reader, scope: Scope) -> list[dict]:
    """Revenue for every day of the period (zero where nothing sold), with the
    trailing 7-day average; the days before the period feed the first averages."""
    widened = Scope(scope.first - timedelta(days=TREND_WINDOW - 1), scope.last, scope.branch_keys)
    where, params = widened.where("a")
    sold = {key: {"transactions": int(t), "revenue": money(r)} for key, t, r in reader.query(
        f"""SELECT a.date_key, sum(a.transactions), sum(a.revenue) FROM agg_sale_hour a
            WHERE {where} GROUP BY a.date_key""", params)}
    # Days before the warehouse's first sale are unknown, not zero: they stay out of the average.
    known_from = reader.scalar("SELECT min(date_key) FROM agg_sale_hour") or 0
    series, window = [], []
    day = widened.first
    while day <= scope.last:
        row = sold.get(date_key(day), {"transactions": 0, "revenue": money(0)})
        if date_key(day) >= known_from:
            window = (window + [row["revenue"]])[-TREND_WINDOW:]
        if day >= scope.first:
            series.append({"date": day.isoformat(), "revenue": row["revenue"], "transactions": row["transactions"],
                           "average_7d": money(sum(window) / len(window)) if window else money(0)})
        day += timedelta(days=1)
    return series


# What sells ------------------------------------------------------------------

def product_ranking(reader: Reader, scope: Scope, limit: int = 10) -> dict:
    """Top and bottom products by quantity and by revenue."""
    where, params = scope.where("a")
    found = reader.query(
        f"""SELECT p.size, p.name, p.flavour, x.quantity, x.revenue
            FROM (SELECT a.product_key, sum(a.quantity) AS quantity, sum(a.revenue) AS revenue
                  FROM agg_product_day a WHERE {where} GROUP BY a.product_key) x
            JOIN dim_product p ON p.product_key = x.product_key""", params)
    rows = [{"product": product_label(size, name, flavour), "size": size, "name": name, "flavour": flavour,
             "quantity": int(q), "revenue": money(r)} for size, name, flavour, q, r in found]
    by_quantity = sorted(rows, key=lambda p: (-p["quantity"], -p["revenue"], p["product"]))
    by_revenue = sorted(rows, key=lambda p: (-p["revenue"], -p["quantity"], p["product"]))
    return {"products": len(rows),
            "top_by_quantity": by_quantity[:limit], "bottom_by_quantity": by_quantity[::-1][:limit],
            "top_by_revenue": by_revenue[:limit], "bottom_by_revenue": by_revenue[::-1][:limit]}


def _grouped_items(reader: Reader, scope: Scope, column: str, where_extra: str = "") -> list[tuple]:
    where, params = scope.where("a")
    return [(key, int(q), r) for key, q, r in reader.query(
        f"""SELECT p.{column}, sum(x.quantity), sum(x.revenue)
            FROM (SELECT a.product_key, sum(a.quantity) AS quantity, sum(a.revenue) AS revenue
                  FROM agg_product_day a WHERE {where} GROUP BY a.product_key) x
            JOIN dim_product p ON p.product_key = x.product_key
            WHERE 1 = 1 {where_extra}
            GROUP BY p.{column}""", params)]


def sizes(reader: Reader, scope: Scope) -> list[dict]:
    rows = [{"size": size or "(no size)", "quantity": q, "revenue": money(r)}
            for size, q, r in _grouped_items(reader, scope, "size")]
    return sorted(rows, key=lambda s: (-s["quantity"], s["size"]))


def flavours(reader: Reader, scope: Scope) -> list[dict]:
    rows = [{"flavour": flavour, "quantity": q, "revenue": money(r)}
            for flavour, q, r in _grouped_items(reader, scope, "flavour", "AND p.flavour IS NOT NULL")]
    return sorted(rows, key=lambda f: (-f["quantity"], f["flavour"]))


def product_mix(reader: Reader, scope: Scope, branches_shown: int = 20) -> dict:
    """Each branch's items by product category (categories file: cafe_etl/categories.py),
    categories in the chain's order by items; the branches with most items."""
    where, params = scope.where("a")
    rows = [(branch, category, int(q)) for branch, category, q in reader.query(
        f"""SELECT b.name, coalesce(p.category, ?), sum(x.quantity)
            FROM (SELECT a.branch_key, a.product_key, sum(a.quantity) AS quantity
                  FROM agg_product_day a WHERE {where}
                  GROUP BY a.branch_key, a.product_key) x
            JOIN dim_product p ON p.product_key = x.product_key
            JOIN dim_branch b ON b.branch_key = x.branch_key
            GROUP BY 1, 2""", [UNCATEGORISED, *params])]
    by_category: dict[str, int] = defaultdict(int)
    by_branch: dict[str, int] = defaultdict(int)
    for branch, category, quantity in rows:
        by_category[category] += quantity
        by_branch[branch] += quantity
    names = [c for c, _ in sorted(by_category.items(), key=lambda kv: (-kv[1], kv[0]))]
    branches = [b for b, _ in sorted(by_branch.items(), key=lambda kv: (-kv[1], kv[0]))[:branches_shown]]
    matrix = {b: dict.fromkeys(names, 0) for b in branches}
    for branch, category, quantity in rows:
        if branch in matrix:
            matrix[branch][category] += quantity
    return {"categories": names, "branches": [{"branch": b, "quantities": [matrix[b][n] for n in names],
                                              "items": by_branch[b]} for b in branches]}


def case_variants(reader: Reader, scope: Scope) -> list[dict]:
    """Product names sold in the period that differ only by case ("Hot Chocolate", "Hot
    chocolate"): distinct products, as the till prices them differently; each spelling
    with its items and average price per size."""
    where, params = scope.where("a")
    rows = reader.query(
        f"""SELECT p.name, p.size, sum(a.quantity), sum(a.revenue)
            FROM agg_product_day a JOIN dim_product p ON p.product_key = a.product_key
            WHERE {where} AND lower(p.name) IN (
                SELECT lower(name) FROM dim_product GROUP BY lower(name) HAVING count(DISTINCT name) > 1)
            GROUP BY p.name, p.size""", params)
    spellings: dict[str, dict[str, dict]] = defaultdict(dict)
    for name, size, quantity, revenue in rows:
        entry = spellings[name.lower()].setdefault(name, {"name": name, "quantity": 0, "prices": {}})
        entry["quantity"] += int(quantity)
        entry["prices"][size or ""] = _ratio(revenue, quantity)
    return [{"names": sorted(found.values(), key=lambda e: e["name"])}
            for _, found in sorted(spellings.items()) if len(found) > 1]


# Payments --------------------------------------------------------------------

def payment_split(reader: Reader, scope: Scope) -> list[dict]:
    """Transactions and revenue per payment method, with each one's share of both."""
    rows = report.payments(reader, scope)
    tx = sum(r["transactions"] for r in rows)
    revenue = sum((r["revenue"] for r in rows), Decimal(0))
    return [{**r, "transactions_share_pct": round(100 * r["transactions"] / tx, 1) if tx else 0.0,
             "revenue_share_pct": round(float(100 * r["revenue"] / revenue), 1) if revenue else 0.0} for r in rows]


def payments_over_time(reader: Reader, scope: Scope, grain: str = "day") -> dict:
    """Transactions and revenue per method for every day (week, month) of the period."""
    where, params = scope.where("f")
    method_of = _payment_methods(reader)
    rows = [(key, method_of[payment], tx, revenue) for key, payment, tx, revenue in reader.query(
        f"""SELECT f.date_key, f.payment_key, count(*), sum(f.total)
            FROM fact_sale f WHERE {where} GROUP BY f.date_key, f.payment_key""", params)]
    methods = sorted({method for _, method, _, _ in rows})
    starts = sorted({bucket(d, grain) for d in _calendar(scope)})
    index = {start: n for n, start in enumerate(starts)}
    series = {m: {"transactions": [0] * len(starts), "revenue": [money(0)] * len(starts)} for m in methods}
    for key, method, tx, revenue in rows:
        n = index[bucket(report.from_key(key), grain)]
        series[method]["transactions"][n] += int(tx)
        series[method]["revenue"][n] += money(revenue)
    return {"dates": [d.isoformat() for d in starts],
            "methods": [{"method": m, **series[m]} for m in methods]}


def _payment_methods(reader: Reader) -> dict[int, str]:
    return dict(reader.query("SELECT payment_key, method FROM dim_payment_method"))


def payments_by_branch(reader: Reader, scope: Scope) -> list[dict]:
    """Per branch: transactions by cash and by card, and the card share (by transactions)."""
    where, params = scope.where("f")
    method_of = _payment_methods(reader)
    name_of = dict(reader.query("SELECT branch_key, name FROM dim_branch"))
    # Grouped by keys, named after: joining names to millions of sales costs twice the grouping.
    rows = [(name_of[branch], method_of[payment], tx, revenue) for branch, payment, tx, revenue in reader.query(
        f"""SELECT f.branch_key, f.payment_key, count(*), sum(f.total)
            FROM fact_sale f WHERE {where} GROUP BY f.branch_key, f.payment_key""", params)]
    branches: dict[str, dict] = {}
    for name, method, tx, revenue in rows:
        entry = branches.setdefault(name, {"branch": name, "transactions": 0, "revenue": money(0), "methods": {}})
        entry["transactions"] += int(tx)
        entry["revenue"] += money(revenue)
        entry["methods"][method] = int(tx)
    out = [{**b, "card_share_pct": round(100 * b["methods"].get("CARD", 0) / b["transactions"], 1)}
           for b in branches.values()]
    return sorted(out, key=lambda b: (-b["card_share_pct"], b["branch"]))


# Where -----------------------------------------------------------------------

def branch_ranking(reader: Reader, scope: Scope) -> list[dict]:
    where, params = scope.where("a")
    rows = reader.query(
        f"""SELECT b.name, sum(a.transactions), sum(a.items), sum(a.revenue)
            FROM agg_sale_hour a JOIN dim_branch b ON b.branch_key = a.branch_key
            WHERE {where}
            GROUP BY b.name""", params)
    out = [{"branch": name, "revenue": money(r), "transactions": int(t), "items": int(i),
            "average_basket": _ratio(r, t)} for name, t, i, r in rows]
    out.sort(key=lambda b: (-b["revenue"], b["branch"]))
    for rank, row in enumerate(out, 1):
        row["rank"] = rank
    return out


def branch_trend(reader: Reader, scope: Scope, top: int = 10, grain: str = "day") -> dict:
    """Revenue per day (week, month) of the period's ``top`` branches by revenue (or of the one chosen)."""
    leaders = [b["branch"] for b in branch_ranking(reader, scope)[:top]]
    where, params = scope.where("a")
    rows = reader.query(
        f"""SELECT b.name, a.date_key, sum(a.revenue)
            FROM agg_sale_hour a JOIN dim_branch b ON b.branch_key = a.branch_key
            WHERE {where}
            GROUP BY b.name, a.date_key""", params)
    dates = _calendar(scope)
    keys = {date_key(d): n for n, d in enumerate(dates)}
    series = {b: [money(0)] * len(dates) for b in leaders}
    for branch, key, revenue in rows:
        if branch in series:
            series[branch][keys[key]] = money(revenue)
    if grain != "day":
        starts = sorted({bucket(d, grain) for d in dates})
        index = {start: n for n, start in enumerate(starts)}
        for b in leaders:
            summed = [money(0)] * len(starts)
            for d, revenue in zip(dates, series[b], strict=True):
                summed[index[bucket(d, grain)]] += revenue
            series[b] = summed
        dates = starts
    return {"dates": [d.isoformat() for d in dates],
            "series": [{"branch": b, "revenue": series[b]} for b in leaders]}


def best_sellers(reader: Reader, scope: Scope) -> list[dict]:
    """Each branch's best-selling item (by quantity, then revenue, then label)."""
    where, params = scope.where("a")
    rows = reader.query(
        f"""SELECT b.name, p.size, p.name, p.flavour, x.quantity, x.revenue
            FROM (SELECT a.branch_key, a.product_key, sum(a.quantity) AS quantity, sum(a.revenue) AS revenue
                  FROM agg_product_day a WHERE {where}
                  GROUP BY a.branch_key, a.product_key) x
            JOIN dim_product p ON p.product_key = x.product_key
            JOIN dim_branch b ON b.branch_key = x.branch_key""", params)
    best: dict[str, tuple] = {}
    for branch, size, name, flavour, quantity, revenue in rows:
        label = product_label(size, name, flavour)
        candidate = (-quantity, -revenue, label)
        if branch not in best or candidate < best[branch][0]:
            best[branch] = (candidate, {"branch": branch, "product": label, "quantity": int(quantity),
                                        "revenue": money(revenue)})
    return [best[b][1] for b in sorted(best)]


# When ------------------------------------------------------------------------

def heatmap(reader: Reader, scope: Scope) -> dict:
    """Transactions and revenue by ISO weekday (1 = Monday) and hour of day."""
    where, params = scope.where("a")
    rows = reader.query(
        f"""SELECT d.weekday, a.hour, sum(a.transactions), sum(a.revenue)
            FROM agg_sale_hour a JOIN dim_date d ON d.date_key = a.date_key
            WHERE {where}
            GROUP BY d.weekday, a.hour""", params)
    cells = sorted(({"weekday": int(w), "hour": int(h), "transactions": int(t), "revenue": money(r)}
                    for w, h, t, r in rows), key=lambda c: (c["weekday"], c["hour"]))
    return {"weekdays": list(WEEKDAYS), "cells": cells}


def peak_hours(reader: Reader, scope: Scope) -> list[dict]:
    """Each branch's busiest hour and the share of its transactions in it."""
    where, params = scope.where("a")
    rows = reader.query(
        f"""SELECT b.name, a.hour, sum(a.transactions)
            FROM agg_sale_hour a JOIN dim_branch b ON b.branch_key = a.branch_key
            WHERE {where}
            GROUP BY b.name, a.hour""", params)
    per_branch: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for branch, hour, count in rows:
        per_branch[branch].append((int(hour), int(count)))
    out = []
    for branch in sorted(per_branch):
        counts = per_branch[branch]
        hour, count = min(counts, key=lambda hc: (-hc[1], hc[0]))
        total = sum(c for _, c in counts)
        out.append({"branch": branch, "peak_hour": hour, "transactions": count,
                    "share_pct": round(100 * count / total, 1)})
    return out


def revenue_by_hour(reader: Reader, scope: Scope) -> list[dict]:
    """Transactions and revenue per hour of the day."""
    where, params = scope.where("a")
    rows = reader.query(
        f"""SELECT a.hour, sum(a.transactions), sum(a.revenue) FROM agg_sale_hour a
            WHERE {where} GROUP BY a.hour""", params)
    return [{"hour": int(h), "transactions": int(t), "revenue": money(r)} for h, t, r in sorted(rows)]


def _calendar(scope: Scope) -> list[date]:
    return [scope.first + timedelta(days=n) for n in range((scope.last - scope.first).days + 1)]
