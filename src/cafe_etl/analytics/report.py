"""The business report (DESIGN §8): what sells, where, when, to whom, and data quality.

Every query is portable SQL with bound parameters, read through the warehouse's
read gateway. Sorting is done here, in Python, so every warehouse orders ties the
same way: by revenue descending, then by name.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from cafe_etl.categories import UNCATEGORISED
from cafe_etl.errors import BadRequest
from cafe_etl.rules import FileStatus
from cafe_etl.warehouse.base import Reader

CENT = Decimal("0.01")


class UnknownBranch(BadRequest):
    pass


class BadPeriod(BadRequest):
    pass


@dataclass(frozen=True)
class Filters:
    first: date | None = None
    last: date | None = None
    branch: str | tuple[str, ...] | None = None  # one branch, or several (the dashboard)

    @property
    def branches(self) -> tuple[str, ...]:
        if self.branch is None:
            return ()
        return (self.branch,) if isinstance(self.branch, str) else tuple(self.branch)


@dataclass(frozen=True)
class Scope:
    """Filters resolved against the warehouse: a period and perhaps some branches
    (``branch_keys`` None: the whole chain)."""

    first: date | None
    last: date | None
    branch_keys: tuple[int, ...] | None = None

    @property
    def empty(self) -> bool:
        return self.first is None

    @property
    def chain_wide(self) -> bool:
        return self.branch_keys is None

    def where(self, alias: str) -> tuple[str, list]:
        """A WHERE clause on ``alias`` (a fact table) and its parameters."""
        clause = f"{alias}.date_key BETWEEN ? AND ?"
        params: list = [date_key(self.first), date_key(self.last)]
        clause += branch_clause(alias, self.branch_keys, params)
        return clause, params


def branch_clause(alias: str, keys: tuple[int, ...] | None, params: list) -> str:
    """`` AND alias.branch_key IN (...)`` for chosen branches (adding to ``params``), or nothing."""
    if keys is None:
        return ""
    params.extend(keys)
    return f" AND {alias}.branch_key IN ({', '.join('?' * len(keys))})"


def date_key(day: date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def money(value) -> Decimal:
    return Decimal(value or 0).quantize(CENT)


def branch_identity(name: str) -> str:
    """Branch identity ignores case and extra spaces (DESIGN §3)."""
    return re.sub(r"\s+", " ", name.strip()).lower()


def resolve(reader: Reader, filters: Filters) -> Scope:
    if filters.first and filters.last and filters.first > filters.last:
        raise BadPeriod(f"--from {filters.first} is after --to {filters.last}")
    names = filters.branches
    branch_keys = tuple(dict.fromkeys(_branch_key(reader, name) for name in names)) if names else None
    # The per-file aggregates hold exactly the facts' days, in a table a thousandth the
    # size: PostgreSQL has no zone maps and would read every sale for these two values.
    low, high = reader.query("SELECT min(date_key), max(date_key) FROM agg_sale_hour")[0]
    first = filters.first or (from_key(low) if low else None)
    last = filters.last or (from_key(high) if high else None)
    if first is None or last is None:
        return Scope(None, None, branch_keys)  # an empty warehouse and no period asked for
    return Scope(first, last, branch_keys)


RECENT_DAYS = 28  # an insight's period when none is asked for: the latest four weeks with sales


def recent(reader: Reader, filters: Filters, days: int = RECENT_DAYS) -> Scope:
    """The scope of an insight and of the dashboard (DESIGN §11): as asked; without a
    first day, the latest ``days`` days with sales up to the last day (never before
    the first day with sales)."""
    resolved = resolve(reader, filters)
    if resolved.empty:
        return resolved
    first = resolved.first
    if filters.first is None:
        first = max(first, resolved.last - timedelta(days=days - 1))
    if first > resolved.last:
        # One end given, the other taken from the data, and they cross.
        low, high = sales_window(reader)
        raise BadPeriod(f"from ({first}) is after to ({resolved.last}); the sales run "
                        f"from {low} to {high} unless you give both ends")
    return Scope(first, resolved.last, resolved.branch_keys)


def sales_window(reader: Reader, branch_key: int | None = None) -> tuple[date | None, date | None]:
    """The first and last day with sales, in the whole warehouse or at one branch."""
    where, params = ("WHERE branch_key = ?", [branch_key]) if branch_key is not None else ("", [])
    low, high = reader.query(f"SELECT min(date_key), max(date_key) FROM agg_sale_hour {where}", params)[0]
    return (from_key(low) if low else None), (from_key(high) if high else None)


def from_key(key: int) -> date:
    """The day of a ``YYYYMMDD`` date key."""
    return date(key // 10000, key // 100 % 100, key % 100)


def _branch_key(reader: Reader, name: str) -> int:
    wanted = branch_identity(name)
    rows = reader.query("SELECT branch_key FROM dim_branch WHERE branch_id = ?", [wanted])
    if rows:
        return rows[0][0]
    known = [r[0] for r in reader.query("SELECT name FROM dim_branch ORDER BY name")]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else (f"; {len(known)} branches are known" if known else "")
    raise UnknownBranch(f"unknown branch {name!r}{hint}")


def totals(reader: Reader, scope: Scope) -> dict:
    where, params = scope.where("f")
    tx, items, revenue, branches = reader.query(
        f"""SELECT count(*), coalesce(sum(f.item_count), 0), coalesce(sum(f.total), 0),
                   count(DISTINCT f.branch_key)
            FROM fact_sale f WHERE {where}""",
        params,
    )[0]
    return {"transactions": tx, "items": int(items), "revenue": money(revenue), "branches": branches}


def branches(reader: Reader, scope: Scope) -> list[dict]:
    where, params = scope.where("f")
    rows = reader.query(
        f"""SELECT b.name, count(*), sum(f.item_count), sum(f.total)
            FROM fact_sale f JOIN dim_branch b ON b.branch_key = f.branch_key
            WHERE {where}
            GROUP BY b.branch_key, b.name""",
        params,
    )
    out = [{"branch": n, "transactions": t, "items": int(i), "revenue": money(r)} for n, t, i, r in rows]
    return sorted(out, key=lambda b: (-b["revenue"], b["branch"]))


def products(reader: Reader, scope: Scope) -> list[dict]:
    where, params = scope.where("i")
    rows = reader.query(
        f"""SELECT p.size, p.name, p.flavour, count(*), sum(i.unit_price)
            FROM fact_sale_item i JOIN dim_product p ON p.product_key = i.product_key
            WHERE {where}
            GROUP BY p.product_key, p.size, p.name, p.flavour""",
        params,
    )
    out = [{"size": s, "name": n, "flavour": f, "quantity": q, "revenue": money(r)} for s, n, f, q, r in rows]
    return sorted(out, key=lambda p: (-p["revenue"], p["name"], p["size"] or "", p["flavour"] or ""))


def categories(reader: Reader, scope: Scope) -> list[dict]:
    """Items and revenue per product category (``dim_product.category``, from the
    categories file: cafe_etl/categories.py), with each one's share of the revenue."""
    where, params = scope.where("a")
    rows = reader.query(
        f"""SELECT coalesce(p.category, ?), sum(a.quantity), sum(a.revenue)
            FROM agg_product_day a JOIN dim_product p ON p.product_key = a.product_key
            WHERE {where}
            GROUP BY 1""",
        [UNCATEGORISED, *params],
    )
    total = sum((r for _, _, r in rows), Decimal(0))
    out = [{"category": c, "quantity": int(q), "revenue": money(r),
            "revenue_share_pct": round(float(100 * r / total), 1) if total else 0.0} for c, q, r in rows]
    return sorted(out, key=lambda c: (-c["revenue"], c["category"]))


def hours(reader: Reader, scope: Scope) -> list[dict]:
    where, params = scope.where("f")
    rows = reader.query(
        f"""SELECT t.hour, count(*), sum(f.total)
            FROM fact_sale f JOIN dim_time t ON t.time_key = f.time_key
            WHERE {where}
            GROUP BY t.hour ORDER BY t.hour""",
        params,
    )
    return [{"hour": h, "transactions": t, "revenue": money(r)} for h, t, r in rows]


def days(reader: Reader, scope: Scope) -> list[dict]:
    where, params = scope.where("f")
    rows = reader.query(
        f"""SELECT d.date, count(*), sum(f.total)
            FROM fact_sale f JOIN dim_date d ON d.date_key = f.date_key
            WHERE {where}
            GROUP BY d.date ORDER BY d.date""",
        params,
    )
    return [{"date": d.isoformat(), "transactions": t, "revenue": money(r)} for d, t, r in rows]


def payments(reader: Reader, scope: Scope) -> list[dict]:
    where, params = scope.where("f")
    rows = reader.query(
        f"""SELECT m.method, count(*), sum(f.total)
            FROM fact_sale f JOIN dim_payment_method m ON m.payment_key = f.payment_key
            WHERE {where}
            GROUP BY m.method""",
        params,
    )
    out = [{"method": m, "transactions": t, "revenue": money(r)} for m, t, r in rows]
    return sorted(out, key=lambda p: (-p["revenue"], p["method"]))


def whole_history(reader: Reader, scope: Scope) -> bool:
    """Whether ``scope`` holds every sale of the chain. Then each customer's sales in it
    are their sales to date, which loads keep exact in ``dim_customer``: one row per
    customer is read instead of grouping every sale."""
    if scope.empty or not (scope.chain_wide and reader.keeps_customer_rollups):
        return False
    low, high = sales_window(reader)
    return low is not None and scope.first <= low and scope.last >= high


def customers(reader: Reader, scope: Scope) -> dict:
    """New: first sale ever inside the period. Returning: first sale before it.
    Repeat: sales on two or more days inside the period. A customer's first sale is
    ``dim_customer.first_seen``, which loads keep exact (warehouse/load_sql.py). For
    all branches, the period's new customers are exactly those first seen inside it
    (their first sale is one of its sales), so they are counted from the dimension
    without matching every customer of the period against it; for the whole history,
    from each customer's sales to date."""
    if whole_history(reader, scope):  # everyone's first sale is inside it
        distinct, repeat = reader.query(
            "SELECT count(*), coalesce(sum(CASE WHEN first_seen < last_seen THEN 1 ELSE 0 END), 0) "
            "FROM dim_customer")[0]
        return {"distinct": int(distinct), "new": int(distinct), "returning": 0, "repeat": int(repeat)}
    where, params = scope.where("f")
    inside = f"""SELECT f.customer_key, min(f.date_key) AS first_key, max(f.date_key) AS last_key
                 FROM fact_sale f WHERE f.customer_key IS NOT NULL AND {where}
                 GROUP BY f.customer_key"""
    if scope.chain_wide:
        row = reader.query(
            f"""SELECT count(*), (SELECT count(*) FROM dim_customer WHERE first_seen BETWEEN ? AND ?),
                       coalesce(sum(CASE WHEN i.first_key < i.last_key THEN 1 ELSE 0 END), 0)
                FROM ({inside}) i""",
            [scope.first, scope.last, *params])[0]
    else:
        row = reader.query(
            f"""SELECT count(*), coalesce(sum(CASE WHEN c.first_seen >= ? THEN 1 ELSE 0 END), 0),
                       coalesce(sum(CASE WHEN i.first_key < i.last_key THEN 1 ELSE 0 END), 0)
                FROM ({inside}) i JOIN dim_customer c ON c.customer_key = i.customer_key""",
            [scope.first, *params])[0]
    distinct, new, repeat = (int(v) for v in row)
    return {"distinct": distinct, "new": new, "returning": distinct - new, "repeat": repeat}


def quality(reader: Reader) -> dict:
    """Every file and reject in the warehouse, whatever the period."""
    from cafe_etl.analytics.operations import ledger_state

    state = ledger_state(reader)
    return {
        "files_loaded": state.count(FileStatus.LOADED),
        "files_failed": state.count(FileStatus.FAILED),
        "rows_rejected": sum(state.rejects.values()),
        "rejects_by_reason": dict(sorted(state.rejects.items())),
    }


def build(reader: Reader, filters: Filters) -> dict:
    """The report in the JSON contract's shape, money as Decimal with 2 places."""
    scope = resolve(reader, filters)
    period = {"from": scope.first.isoformat() if scope.first else None,
              "to": scope.last.isoformat() if scope.last else None}
    if scope.empty:
        return {"period": period,
                "totals": {"transactions": 0, "items": 0, "revenue": money(0), "branches": 0},
                "branches": [], "products": [], "categories": [], "hours": [],
                "days": [], "payments": [],
                "customers": {"distinct": 0, "new": 0, "returning": 0, "repeat": 0},
                "change": None, "quality": quality(reader)}
    return {
        "period": period,
        "totals": totals(reader, scope),
        "branches": branches(reader, scope),
        "products": products(reader, scope),
        "categories": categories(reader, scope),
        "hours": hours(reader, scope),
        "days": days(reader, scope),
        "payments": payments(reader, scope),
        "customers": customers(reader, scope),
        "change": change(reader, scope),
        "quality": quality(reader),
    }


def change(reader: Reader, scope: Scope) -> dict:
    """The headline figures against the previous period of the same length, as the
    dashboard's overview shows them (``business.overview``)."""
    from cafe_etl.analytics import business

    return business.overview(reader, scope)
