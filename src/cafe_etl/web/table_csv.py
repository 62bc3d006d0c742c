"""Any chart's data as CSV: a list of records becomes rows; nested records become
dotted columns, lists of numbers one column per position (a series over the chart's
dates), and a record of several lists one block of rows per list, named in `part`."""

from __future__ import annotations

import csv
import io
from typing import Any


def rows_of(data: Any) -> list[dict]:
    if data is None:
        return []
    if isinstance(data, list):
        return [_flat(item) for item in data]
    if isinstance(data, dict):
        parts = {key: value for key, value in data.items() if isinstance(value, list) and value
                 and isinstance(value[0], dict)}
        if not parts:
            return [_flat(data)]
        shared = {key: value for key, value in data.items() if key not in parts and not isinstance(value, list)}
        axes = {key: value for key, value in data.items() if key not in parts and isinstance(value, list)}
        rows = []
        for part, items in parts.items():
            for item in items:
                flat = _flat(item, axes=axes)
                rows.append({"part": part, **_flat(shared), **flat} if len(parts) > 1 else {**_flat(shared), **flat})
        return rows
    return [{"value": data}]


def _flat(item: Any, prefix: str = "", axes: dict | None = None) -> dict:
    if not isinstance(item, dict):
        return {prefix or "value": item}
    out: dict = {}
    for key, value in item.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        elif isinstance(value, list):
            labels = _labels(axes, len(value))
            for n, element in enumerate(value):
                out[f"{name}.{labels[n]}"] = element if not isinstance(element, dict) else str(element)
        else:
            out[name] = value
    return out


def _labels(axes: dict | None, length: int) -> list[str]:
    """A series' positions named by the chart's axis (its dates) when the lengths agree."""
    for values in (axes or {}).values():
        if len(values) == length:
            return [str(v) for v in values]
    return [str(n) for n in range(length)]


def to_csv(data: Any) -> str:
    rows = rows_of(data)
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _plain(row[c]) for c in columns])
    return out.getvalue()


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)  # numbers as the JSON answer writes them (parsed as Decimal: 12.50 stays 12.50)
