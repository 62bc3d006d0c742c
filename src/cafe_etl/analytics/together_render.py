"""The ``together`` answer as a terminal table (Rich) or CSV, one row per pair."""

from __future__ import annotations

import csv
import io

from rich.table import Table

from cafe_etl.analytics.render import product_label

SHOWN = 25
COLUMNS = ("a_size", "a_name", "a_flavour", "b_size", "b_name", "b_flavour", "baskets", "a_baskets", "b_baskets",
           "support", "confidence_ab", "confidence_ba", "lift", "q_value")


def table(answer: dict) -> Table:
    period, pairs = answer["period"], answer["pairs"]
    title = (f"Bought together {period['from'] or '-'} to {period['to'] or '-'}: "
             f"{len(pairs):,} pairs in {answer['baskets']:,} sales (top {min(SHOWN, len(pairs))} by lift)")
    out = Table(title=title, title_justify="left", title_style="bold", header_style="bold magenta")
    for column in ("#", "product", "with", "sales together", "support", "a → b", "b → a", "lift", "q"):
        out.add_column(column, justify="left" if column in ("product", "with") else "right")
    for rank, p in enumerate(pairs[:SHOWN], start=1):
        out.add_row(str(rank), product_label(p["a"]), product_label(p["b"]), f"{p['baskets']:,}",
                    f"{100 * p['support']:.2f}%", f"{100 * p['confidence_ab']:.1f}%",
                    f"{100 * p['confidence_ba']:.1f}%", f"{p['lift']:.2f}", f"{p['q_value']:.2g}")
    return out


def to_csv(answer: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["from", "to", "sales", *COLUMNS])
    for p in answer["pairs"]:
        flat = {f"{side}_{k}": p[side][k] for side in ("a", "b") for k in ("size", "name", "flavour")} | p
        writer.writerow([answer["period"]["from"], answer["period"]["to"], answer["baskets"],
                         *("" if flat[c] is None else flat[c] for c in COLUMNS)])
    return out.getvalue()
