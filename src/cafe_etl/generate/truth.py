"""The expected figures of a generated landing folder, in the report's JSON shape.

Computed from what the generator decided, never from the files, so a test can hold
the pipeline's ``report --format json`` against it figure by figure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from cafe_etl import categories
from cafe_etl.generate.day import DayTruth


def _money(pence: int) -> float:
    return round(pence / 100, 2)


@dataclass
class ChainTruth:
    start: date
    days: list[DayTruth] = field(default_factory=list)
    # customer key -> bit mask of the day offsets (from start) with a sale
    customer_days: dict[int, int] = field(default_factory=dict)

    def add(self, day: DayTruth) -> None:
        self.days.append(day)
        bit = 1 << (day.day - self.start).days
        for key in day.customers:
            self.customer_days[key] = self.customer_days.get(key, 0) | bit
        day.customers = set()  # folded into customer_days; keep memory flat

    def report(self, first: date, last: date) -> dict:
        """What ``report --from first --to last --format json`` must print."""
        picked = [d for d in self.days if first <= d.day <= last]
        return {
            "period": {"from": first.isoformat(), "to": last.isoformat()},
            "totals": {
                "transactions": sum(d.transactions for d in picked),
                "items": sum(d.items for d in picked),
                "revenue": _money(sum(d.revenue for d in picked)),
                "branches": len({d.branch for d in picked if d.transactions}),
            },
            "branches": _branches(picked),
            "products": _products(picked),
            "categories": _categories(picked),
            "hours": _series(picked, "hours", "hour_revenue", "hour"),
            "days": _days(picked),
            "payments": _payments(picked),
            "customers": self._customers((first - self.start).days, (last - self.start).days),
            "change": self._change(first, last),
            "quality": self.quality(),
        }

    def _change(self, first: date, last: date) -> dict:
        """The headline figures against the period of the same length just before."""
        before_last = first - timedelta(days=1)
        before_first = before_last - (last - first)
        now, before = (_kpis([d for d in self.days if lo <= d.day <= hi])
                       for lo, hi in ((first, last), (before_first, before_last)))
        return {"previous_period": {"from": before_first.isoformat(), "to": before_last.isoformat()},
                "figures": {name: {"value": value, "previous": before[name], "change_pct": _pct(value, before[name])}
                            for name, value in now.items()}}

    def quality(self) -> dict:
        rejects = Counter()
        for d in self.days:
            rejects.update(d.rejects)
        return {
            "files_loaded": sum(1 for d in self.days if d.transactions),
            "files_failed": sum(1 for d in self.days if not d.transactions),
            "rows_rejected": sum(rejects.values()),
            "rejects_by_reason": dict(sorted(rejects.items())),
        }

    def _customers(self, lo: int, hi: int) -> dict:
        window = ((1 << (hi - lo + 1)) - 1) << lo
        distinct = new = repeat = 0
        for mask in self.customer_days.values():
            inside = mask & window
            if not inside:
                continue
            distinct += 1
            if mask & ((1 << lo) - 1) == 0:
                new += 1
            if inside.bit_count() >= 2:
                repeat += 1
        return {"distinct": distinct, "new": new, "returning": distinct - new, "repeat": repeat}


def _branches(picked: list[DayTruth]) -> list[dict]:
    rows: dict[str, list[int]] = {}
    for d in picked:
        if d.transactions:
            row = rows.setdefault(d.branch, [0, 0, 0])
            row[0] += d.transactions
            row[1] += d.items
            row[2] += d.revenue
    ordered = sorted(rows.items(), key=lambda kv: (-kv[1][2], kv[0]))
    return [{"branch": b, "transactions": t, "items": i, "revenue": _money(r)} for b, (t, i, r) in ordered]


def _products(picked: list[DayTruth]) -> list[dict]:
    quantity, revenue = Counter(), Counter()
    for d in picked:
        quantity.update(d.products)
        revenue.update(d.product_revenue)
    ordered = sorted(quantity, key=lambda k: (-revenue[k], k[1], k[0] or "", k[2] or ""))
    return [
        {"size": s, "name": n, "flavour": f, "quantity": quantity[(s, n, f)], "revenue": _money(revenue[(s, n, f)])}
        for s, n, f in ordered
    ]


def _categories(picked: list[DayTruth]) -> list[dict]:
    mapping = categories.load()
    quantity, revenue = Counter(), Counter()
    for d in picked:
        for (_size, name, _flavour), n in d.products.items():
            quantity[mapping.category_of(name)] += n
        for (_size, name, _flavour), pence in d.product_revenue.items():
            revenue[mapping.category_of(name)] += pence
    total = sum(revenue.values())
    ordered = sorted(quantity, key=lambda c: (-revenue[c], c))
    return [{"category": c, "quantity": quantity[c], "revenue": _money(revenue[c]),
             "revenue_share_pct": round(float(Decimal(100 * revenue[c]) / Decimal(total)), 1) if total else 0.0}
            for c in ordered]


def _kpis(picked: list[DayTruth]) -> dict:
    tx = sum(d.transactions for d in picked)
    items = sum(d.items for d in picked)
    pence = sum(d.revenue for d in picked)
    ratio = lambda n, places: float((Decimal(n) / tx).quantize(Decimal(places))) if tx else None  # noqa: E731
    return {"revenue": _money(pence), "transactions": tx, "items": items,
            "average_basket_value": ratio(Decimal(pence) / 100, "0.01"), "average_basket_size": ratio(items, "0.01")}


def _pct(now, before) -> float | None:
    if not before:
        return None
    return round(float((Decimal(str(now or 0)) - Decimal(str(before))) / Decimal(str(before))) * 100, 1) + 0.0


def _series(picked: list[DayTruth], counts: str, money: str, label: str) -> list[dict]:
    tx, revenue = Counter(), Counter()
    for d in picked:
        tx.update(getattr(d, counts))
        revenue.update(getattr(d, money))
    return [{label: k, "transactions": tx[k], "revenue": _money(revenue[k])} for k in sorted(tx)]


def _days(picked: list[DayTruth]) -> list[dict]:
    tx, revenue = Counter(), Counter()
    for d in picked:
        if d.transactions:
            tx[d.day] += d.transactions
            revenue[d.day] += d.revenue
    return [{"date": k.isoformat(), "transactions": tx[k], "revenue": _money(revenue[k])} for k in sorted(tx)]


def _payments(picked: list[DayTruth]) -> list[dict]:
    tx, revenue = Counter(), Counter()
    for d in picked:
        tx.update(d.payments)
        revenue.update(d.payment_revenue)
    ordered = sorted(tx, key=lambda k: (-revenue[k], k))
    return [{"method": k, "transactions": tx[k], "revenue": _money(revenue[k])} for k in ordered]
