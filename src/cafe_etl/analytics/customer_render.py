"""The ``customers`` answer as terminal tables (Rich) or tidy CSV, and target lists as CSV."""

from __future__ import annotations

import csv
import io

from rich.console import Group
from rich.table import Table

from cafe_etl.analytics import render
from cafe_etl.analytics.customers import MEANING, TARGET_COLUMNS


def _table(title: str, *columns: str) -> Table:
    return render.table(title, *columns, text=("segment", "what it means", "week"))


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def tables(answer: dict) -> Group:
    period, c = answer["period"], answer["customers"]
    counts = _table(f"Customers {period['from'] or '-'} to {period['to'] or '-'} (by keyed customer hash)",
                    "distinct", "new", "returning", "repeat", "repeat rate")
    counts.add_row(f"{c['distinct']:,}", f"{c['new']:,}", f"{c['returning']:,}", f"{c['repeat']:,}",
                   _share(c["repeat"], c["distinct"]))

    total = sum(s["customers"] for s in answer["segments"])
    segments = _table("Segments (RFM)", "segment", "customers", "share", "sales", "revenue", "what it means")
    for s in answer["segments"]:
        segments.add_row(s["segment"], f"{s['customers']:,}", _share(s["customers"], total), f"{s['sales']:,}",
                         f"£{s['revenue']:,.2f}", MEANING[s["segment"]])

    frequency = _table("Sales per customer", "sales", "customers", "share")
    for f in answer["frequency"]:
        frequency.add_row(f["sales"], f"{f['customers']:,}", _share(f["customers"], total))

    parts = [counts, segments, frequency]
    if answer["cohorts"]:
        weeks = max(len(k["retention"]) for k in answer["cohorts"])
        cohorts = _table("Weekly cohorts: share still buying k weeks after their first week", "week", "customers",
                         *(f"+{k}" for k in range(weeks)))
        for k in answer["cohorts"]:
            cells = [f"{100 * r:.0f}%" for r in k["retention"]] + [""] * (weeks - len(k["retention"]))
            cohorts.add_row(k["week"], f"{k['customers']:,}", *cells)
        parts.append(cohorts)
    return Group(*parts)


def to_csv(answer: dict) -> str:
    """Tidy CSV: section, key, metric, value."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "key", "metric", "value"])
    writer.writerow(["period", "", "from", answer["period"]["from"] or ""])
    writer.writerow(["period", "", "to", answer["period"]["to"] or ""])
    for metric, value in answer["customers"].items():
        writer.writerow(["customers", "", metric, value])
    for s in answer["segments"]:
        for metric in ("customers", "sales", "revenue"):
            writer.writerow(["segments", s["segment"], metric, render.plain(s[metric])])
    for f in answer["frequency"]:
        writer.writerow(["frequency", f["sales"], "customers", f["customers"]])
    for k in answer["cohorts"]:
        writer.writerow(["cohorts", k["week"], "customers", k["customers"]])
        for week, share in enumerate(k["retention"]):
            writer.writerow(["cohorts", k["week"], f"retention_{week}", share])
    return out.getvalue()


def target_csv(rows: list[dict]) -> str:
    """A target list: one row per customer key, the columns of DESIGN §11."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TARGET_COLUMNS)
    for row in rows:
        writer.writerow([render.plain(row[column]) for column in TARGET_COLUMNS])
    return out.getvalue()

