"""Bad rows of every kind the pipeline must quarantine, one defect per row.

Each maker takes a genuine sale and spoils exactly one thing about it, so the
reason code the pipeline must give is known in advance.
"""

from __future__ import annotations

import random
from datetime import date

from cafe_etl.generate.menu import money
from cafe_etl.generate.tillformat import Sale, format_line, item_text, quote, total_text

# Lines that are no row at all: a till's banner, a spreadsheet's stray cell, bytes of
# a broken upload. Each is made unique, so it is not also a repeat of another.
_GARBAGE = ("\x01\x02garbage;;;{}", "=== END OF REPORT {} ===", "<html><body>{}</body></html>", "#{}")


def _field_count(day: date, branch: str, sale: Sale, lines, others, rng: random.Random) -> str:
    line = format_line(day, branch, sale)
    kind = rng.random()
    if kind < 0.4:
        return line + ",EXTRA"
    if kind < 0.8:
        return line.rsplit(",", 1)[0]  # the card field is gone
    return rng.choice(_GARBAGE).format(f"{rng.getrandbits(48):x}")


def _timestamp(day, branch, sale, lines, others, rng) -> str:
    hhmm = f"{sale.minute // 60:02d}:{sale.minute % 60:02d}"
    when = rng.choice(
        (
            f"31/02/{day.year} {hhmm}",
            f"{day.day:02d}/13/{day.year} {hhmm}",
            f"{day.day:02d}/{day.month:02d}/{day.year} 25:{sale.minute % 60:02d}",
            "yesterday",
            "",
        )
    )
    return format_line(day, branch, sale, when=when)


def _missing_branch(day, branch, sale, lines, others, rng) -> str:
    return format_line(day, rng.choice(("", "N/A", "null", "-", "None")), sale)


def _empty_basket(day, branch, sale, lines, others, rng) -> str:
    return format_line(day, branch, sale, basket=rng.choice(("", "N/A")))


def _first_item_as(sale: Sale, text: str) -> str:
    """The basket with its first item written as ``text``."""
    items = [item_text(item) for item in sale.items]
    items[0] = text
    return quote(", ".join(items))


def _bad_item(day, branch, sale, lines, others, rng) -> str:
    item = sale.items[0]
    nameless = f"{item.size} - {money(item.pence)}"
    # Without its " - " before the price. (A flavoured item would still hold one, in
    # front of the flavour, and so read as a bad price: leave those their separator.)
    unpriced = f"{item.label} {money(item.pence)}"
    text = nameless if item.flavour or rng.random() < 0.5 else unpriced
    return format_line(day, branch, sale, basket=_first_item_as(sale, text))


def _bad_price(day, branch, sale, lines, others, rng) -> str:
    item = sale.items[0]
    price = rng.choice(("abc", f"-{money(item.pence)}", "2x15", "N/A"))
    return format_line(day, branch, sale, basket=_first_item_as(sale, f"{item.label} - {price}"))


def _bad_total(day, branch, sale, lines, others, rng) -> str:
    return format_line(day, branch, sale, total=rng.choice(("", "abc", f"-{total_text(sale.pence)}", "N/A")))


def _total_mismatch(day, branch, sale, lines, others, rng) -> str:
    off = rng.randint(1, 150)
    pence = sale.pence + off if rng.random() < 0.5 or sale.pence <= off else sale.pence - off
    return format_line(day, branch, sale, total=total_text(pence))


def _payment(day, branch, sale, lines, others, rng) -> str:
    return format_line(day, branch, sale._replace(payment=rng.choice(("BITCOIN", "N/A", "", "VOUCHER"))))


def _duplicate(day, branch, sale, lines, others, rng) -> str:
    return rng.choice(lines)


def _branch_mismatch(day, branch, sale, lines, others, rng) -> str:
    return format_line(day, rng.choice(others) if others else "Elsewhere", sale)


MAKERS = {
    "BAD_FIELD_COUNT": _field_count,
    "BAD_TIMESTAMP": _timestamp,
    "MISSING_BRANCH": _missing_branch,
    "EMPTY_BASKET": _empty_basket,
    "BAD_ITEM": _bad_item,
    "BAD_PRICE": _bad_price,
    "BAD_TOTAL": _bad_total,
    "TOTAL_MISMATCH": _total_mismatch,
    "BAD_PAYMENT": _payment,
    "DUPLICATE_ROW": _duplicate,
    "BRANCH_MISMATCH": _branch_mismatch,
}


def spoil(
    day: date, branch: str, sale: Sale, lines: list[str], others: list[str], rng: random.Random
) -> tuple[str, str]:
    """A bad row in place of ``sale``: (reason code, line)."""
    kinds = list(MAKERS) if lines else [k for k in MAKERS if k != "DUPLICATE_ROW"]
    kind = rng.choice(kinds)
    return kind, MAKERS[kind](day, branch, sale, lines, others, rng)
