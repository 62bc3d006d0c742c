"""How the tills write a sale: the canonical export line (DESIGN §2, V1)."""

from __future__ import annotations

from datetime import date
from typing import NamedTuple

from cafe_etl.generate.menu import MenuItem

_HHMM = tuple(f"{m // 60:02d}:{m % 60:02d}" for m in range(24 * 60))


class Sale(NamedTuple):
    minute: int  # minutes after midnight
    name: str
    items: tuple[MenuItem, ...]
    payment: str
    card: str
    pence: int  # the basket's total


def total_text(pence: int) -> str:
    """Totals as the till prints them: shortest form, ``5.2``, ``3.0``, ``8.15``."""
    return repr(pence / 100)


def item_text(item: MenuItem) -> str:
    return item.text


def quote(field: str) -> str:
    """The till quotes a field only when it holds a comma."""
    return f'"{field}"' if "," in field else field


def format_basket(items) -> str:
    return quote(", ".join(item_text(item) for item in items))


def stamp(day: date, minute: int) -> str:
    return f"{day.day:02d}/{day.month:02d}/{day.year} {_HHMM[minute]}"


def format_line(
    day: date, branch: str, sale: Sale, *, basket: str | None = None, total: str | None = None, when: str | None = None
) -> str:
    """One export line; keyword overrides replace a field's text as written."""
    when = stamp(day, sale.minute) if when is None else when
    basket = format_basket(sale.items) if basket is None else basket
    total = total_text(sale.pence) if total is None else total
    return f"{when},{branch},{sale.name},{basket},{total},{sale.payment},{sale.card}"
