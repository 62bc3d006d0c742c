"""JSON with money as numbers written with exactly two decimals (``5.20``, not ``5.2``).

The standard encoder writes floats in their shortest form and refuses Decimal, so
the report's JSON is written here: Decimals are money, everything else is plain.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any


def dumps(value: Any, indent: int | None = 2) -> str:
    return _encode(value, indent, 0)


def _encode(value: Any, indent: int | None, depth: int) -> str:
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, dict):
        items = [f"{json.dumps(str(k))}: {_encode(v, indent, depth + 1)}" for k, v in value.items()]
        return _wrap("{", "}", items, indent, depth)
    if isinstance(value, list | tuple):
        return _wrap("[", "]", [_encode(v, indent, depth + 1) for v in value], indent, depth)
    if isinstance(value, datetime | date):
        return json.dumps(value.isoformat())
    return json.dumps(value)


def _wrap(open_: str, close: str, items: list[str], indent: int | None, depth: int) -> str:
    if not items:
        return open_ + close
    if indent is None:
        return open_ + ", ".join(items) + close
    pad = " " * (indent * (depth + 1))
    return open_ + "\n" + ",\n".join(pad + item for item in items) + "\n" + " " * (indent * depth) + close
