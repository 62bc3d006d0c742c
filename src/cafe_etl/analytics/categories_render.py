"""``cafe-etl categories``: each product, the category the mapping gives it and why,
and the one the warehouse holds (they differ until the next load or ``--apply``)."""

from __future__ import annotations

import csv
import io

from cafe_etl.analytics import render
from cafe_etl.categories import Mapping
from cafe_etl.warehouse.base import Reader

COLUMNS = ("size", "name", "flavour", "category", "matched_by", "in_warehouse")


def build(reader: Reader, mapping: Mapping, moved: int | None) -> dict:
    products = []
    for size, name, flavour, stored in reader.query("SELECT size, name, flavour, category FROM dim_product"):
        category, why = mapping.explain(name)
        products.append({"size": size, "name": name, "flavour": flavour, "category": category, "matched_by": why,
                         "in_warehouse": stored})
    order = {name: i for i, name in enumerate(mapping.names)}
    products.sort(key=lambda p: (order.get(p["category"], len(order)), p["name"], p["size"] or "", p["flavour"] or ""))
    return {"source": mapping.source, "categories": mapping.names, "applied": moved, "products": products}


def table(answer: dict):
    pending = sum(p["category"] != p["in_warehouse"] for p in answer["products"])
    out = render.table(f"Product categories ({answer['source']})", "category", "product", "matched by",
                       "in the warehouse", text=("category", "product", "matched by", "in the warehouse"))
    for p in answer["products"]:
        stored = p["in_warehouse"] or "-"
        out.add_row(p["category"], render.product_label(p), p["matched_by"],
                    stored if stored == p["category"] else f"{stored} (until the next load)")
    if answer["applied"] is not None:
        out.caption = f"applied: {answer['applied']} product(s) moved to the file's category"
    elif pending:
        out.caption = f"{pending} product(s) will move at the next load, or now with --apply"
    return out


def to_csv(answer: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for p in answer["products"]:
        writer.writerow(["" if p[c] is None else p[c] for c in COLUMNS])
    return out.getvalue()
