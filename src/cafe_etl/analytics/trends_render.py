"""The ``trends`` answer as terminal tables (Rich) or one tidy CSV (a row per mover or anomaly)."""

from __future__ import annotations

import csv
import io

from rich.console import Group
from rich.text import Text

from cafe_etl.analytics import render

COLUMNS = ("record", "kind", "branch", "size", "name", "flavour", "current", "baseline", "change_pct", "q_value",
           "date", "revenue", "expected", "expected_low", "expected_high")


def _change(pct: float) -> Text:
    return Text(f"{pct:+.1f}%", style="green" if pct > 0 else "red")


def tables(answer: dict) -> Group:
    week = answer["week"]
    span = f"{week['from'] or '-'} to {week['to'] or '-'}"
    base = week["baseline_weeks"]
    movers = render.table(f"Movers {span}, against the mean of the {base} week{'s' if base != 1 else ''} before",
                          "kind", "branch", "product", "this week", "weekly before", "change", "q")
    for m in answer["movers"]:
        product = render.product_label(m) if m["kind"] == "product" else ""
        movers.add_row(m["kind"], m["branch"] or "chain", product, f"{m['current']:,}", f"{m['baseline']:,.1f}",
                       _change(m["change_pct"]), f"{m['q_value']:.2g}")
    if not answer["movers"]:
        movers.caption = ("no history before the week to compare with" if base == 0
                          else "no branch or product changed beyond the threshold")
    days = render.table(f"Days out of the ordinary {span}", "date", "branch", "kind", "revenue", "expected",
                        "expected range")
    for a in answer["anomalies"]:
        days.add_row(a["date"], a["branch"], a["kind"], f"£{a['revenue']:,.2f}", f"£{a['expected']:,.2f}",
                     f"£{a['expected_low']:,.2f} – £{a['expected_high']:,.2f}")
    if not answer["anomalies"]:
        days.caption = "every branch-day within its expected range"
    return Group(movers, days)


def to_csv(answer: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["week_from", "week_to", *COLUMNS])
    week = (answer["week"]["from"], answer["week"]["to"])
    for row in [{"record": "mover", **m} for m in answer["movers"]] + \
               [{"record": "anomaly", **a} for a in answer["anomalies"]]:
        writer.writerow([*week, *(render.plain(row[c]) if row.get(c) is not None else "" for c in COLUMNS)])
    return out.getvalue()
