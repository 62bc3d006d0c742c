"""The report as terminal tables (Rich) or tidy CSV (one value per row)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

TOP = 10


def product_label(p: dict) -> str:
    name = f"{p['name']} - {p['flavour']}" if p["flavour"] else p["name"]
    return f"{p['size']} {name}" if p["size"] else name


def _money(value: Decimal) -> str:
    return f"£{value:,.2f}"


def _bar(value: Decimal | int, top: Decimal | int, width: int = 24) -> Text:
    filled = int(round(width * float(value) / float(top))) if top else 0
    return Text("█" * filled, style="cyan")


def table(title: str, *columns: str, text: tuple[str, ...] = ("branch", "product", "date", "method")) -> Table:
    """A titled table; the ``text`` columns are left-aligned, the figures right-aligned."""
    out = Table(title=title, title_justify="left", title_style="bold", header_style="bold magenta")
    for column in columns:
        out.add_column(column, justify="left" if column in text else "right")
    return out


def tables(report: dict) -> Group:
    t = report["totals"]
    period = report["period"]
    basket = t["revenue"] / t["transactions"] if t["transactions"] else Decimal(0)
    summary = table(f"Sales {period['from'] or '-'} to {period['to'] or '-'}", "transactions", "items",
                     "revenue", "average basket", "branches")
    summary.add_row(f"{t['transactions']:,}", f"{t['items']:,}", _money(t["revenue"]), _money(basket),
                    str(t["branches"]))

    branches = table(f"Best branches (top {TOP} of {len(report['branches'])})", "#", "branch", "transactions",
                      "items", "revenue")
    for rank, b in enumerate(report["branches"][:TOP], start=1):
        branches.add_row(str(rank), b["branch"], f"{b['transactions']:,}", f"{b['items']:,}", _money(b["revenue"]))

    products = table(f"What sells (top {TOP} of {len(report['products'])} products)", "#", "product", "quantity",
                      "revenue")
    for rank, p in enumerate(report["products"][:TOP], start=1):
        products.add_row(str(rank), product_label(p), f"{p['quantity']:,}", _money(p["revenue"]))

    categories = table("Categories", "category", "quantity", "revenue", "share of revenue", text=("category",))
    for c in report["categories"]:
        categories.add_row(c["category"], f"{c['quantity']:,}", _money(c["revenue"]), f"{c['revenue_share_pct']}%")

    hours = table("When (by hour of day)", "hour", "transactions", "revenue", "")
    peak = max((h["revenue"] for h in report["hours"]), default=0)
    for h in report["hours"]:
        hours.add_row(f"{h['hour']:02d}:00", f"{h['transactions']:,}", _money(h["revenue"]), _bar(h["revenue"], peak))

    days = table("Trend (by day)", "date", "transactions", "revenue", "")
    peak = max((d["revenue"] for d in report["days"]), default=0)
    for d in report["days"]:
        days.add_row(d["date"], f"{d['transactions']:,}", _money(d["revenue"]), _bar(d["revenue"], peak))

    payments = table("Payments", "method", "transactions", "revenue")
    for p in report["payments"]:
        payments.add_row(p["method"], f"{p['transactions']:,}", _money(p["revenue"]))

    c = report["customers"]
    customers = table("Customers (by keyed customer hash)", "distinct", "new", "returning", "repeat")
    customers.add_row(f"{c['distinct']:,}", f"{c['new']:,}", f"{c['returning']:,}", f"{c['repeat']:,}")

    q = report["quality"]
    quality = table("Data quality (whole warehouse)", "files loaded", "files failed", "rows rejected", "by reason")
    reasons = ", ".join(f"{k} {v:,}" for k, v in q["rejects_by_reason"].items()) or "-"
    quality.add_row(f"{q['files_loaded']:,}", f"{q['files_failed']:,}", f"{q['rows_rejected']:,}", reasons)
    parts = [summary]
    if report.get("change"):
        parts.append(_change_table(report["change"]))
    return Group(*parts, branches, products, categories, hours, days, payments, customers, quality)


def _change_table(change: dict) -> Table:
    before = change["previous_period"]
    out = table(f"Against the previous period ({before['from']} to {before['to']})", "figure", "now", "before",
                "change", text=("figure",))
    for name, f in change["figures"].items():
        shown = _money if name in ("revenue", "average_basket_value") else (lambda v: f"{v:,}")
        pct = f["change_pct"]
        out.add_row(name.replace("_", " "), "-" if f["value"] is None else shown(f["value"]),
                    "-" if f["previous"] is None else shown(f["previous"]),
                    Text("-" if pct is None else f"{pct:+.1f}%", style="green" if (pct or 0) > 0 else "red"))
    return out


def print_tables(report: dict, console: Console) -> None:
    console.print(tables(report))


def to_csv(report: dict) -> str:
    """Tidy CSV: section, key, metric, value. Easy to filter and pivot in a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "key", "metric", "value"])
    writer.writerow(["period", "", "from", report["period"]["from"] or ""])
    writer.writerow(["period", "", "to", report["period"]["to"] or ""])
    for metric, value in report["totals"].items():
        writer.writerow(["totals", "", metric, plain(value)])
    sections = (("branches", "branch"), ("products", None), ("categories", "category"), ("hours", "hour"),
                ("days", "date"), ("payments", "method"))
    for section, key in sections:
        for row in report[section]:
            label = product_label(row) if key is None else row[key]
            for metric, value in row.items():
                if metric not in (key, "size", "name", "flavour"):
                    writer.writerow([section, label, metric, plain(value)])
    for metric, value in report["customers"].items():
        writer.writerow(["customers", "", metric, value])
    if report.get("change"):
        for metric in ("from", "to"):
            writer.writerow(["previous_period", "", metric, report["change"]["previous_period"][metric]])
        for figure, f in report["change"]["figures"].items():
            for metric in ("previous", "change_pct"):
                writer.writerow(["previous_period", figure, metric, "" if f[metric] is None else plain(f[metric])])
    q = report["quality"]
    for metric in ("files_loaded", "files_failed", "rows_rejected"):
        writer.writerow(["quality", "", metric, q[metric]])
    for reason, n in q["rejects_by_reason"].items():
        writer.writerow(["quality", reason, "rows_rejected", n])
    return out.getvalue()


def plain(value) -> str:
    return f"{value:.2f}" if isinstance(value, Decimal) else str(value)
