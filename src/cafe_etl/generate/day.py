"""One branch's day of trading, written as the till exports it, with its true figures."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from cafe_etl.generate import faults
from cafe_etl.generate.chain import Branch, Customer, luhn_card, occasionals, random_name
from cafe_etl.generate.effects import BOOST, SHORT, Effects
from cafe_etl.generate.menu import PAIRING_CHANCE
from cafe_etl.generate.tillformat import Sale, format_line

# Relative footfall per hour: a morning rush, a lunch peak, a quieter afternoon.
_WEEKDAY_HOURS = {8: 9, 9: 10, 10: 7, 11: 6, 12: 10, 13: 9, 14: 5, 15: 5, 16: 5, 17: 4, 18: 3, 19: 2, 20: 2}
# Weekends start later and peak around late morning and lunch.
_WEEKEND_HOURS = {8: 3, 9: 6, 10: 9, 11: 10, 12: 10, 13: 9, 14: 7, 15: 6, 16: 5, 17: 4, 18: 3, 19: 2, 20: 2}
_DAY_FACTOR = (1.0, 0.95, 1.0, 1.05, 1.1, 1.2, 0.8)  # Monday .. Sunday
_BASKET_SIZES = (1, 2, 3, 4, 5, 6)
_BASKET_CUM = (32, 59, 77, 89, 96, 100)
_REGULAR_SHARE = 0.35  # sales by a branch's regulars
_OCCASIONAL_SHARE = 0.3  # by its occasional customers; the rest by passers-by, seen once
_REPEAT_ITEM = 0.2
_CARD_SHARE = 0.6


def customer_key(name: str, card: str) -> int:
    """The generator's stand-in for the keyed customer hash: same identity rule."""
    normal = " ".join(name.lower().split())
    return int.from_bytes(hashlib.blake2b(f"{normal}\0{card}".encode(), digest_size=8).digest(), "big")


@dataclass
class DayTruth:
    """The expected figures of one generated file."""

    branch: str
    day: date
    lines: int = 0
    transactions: int = 0
    items: int = 0
    revenue: int = 0
    hours: Counter = field(default_factory=Counter)  # hour -> transactions
    hour_revenue: Counter = field(default_factory=Counter)
    payments: Counter = field(default_factory=Counter)
    payment_revenue: Counter = field(default_factory=Counter)
    products: Counter = field(default_factory=Counter)  # (size, name, flavour) -> quantity
    product_revenue: Counter = field(default_factory=Counter)
    customers: set = field(default_factory=set)
    rejects: Counter = field(default_factory=Counter)


def _minutes(branch: Branch, day: date, count: int, rng: random.Random) -> list[int]:
    profile = _WEEKEND_HOURS if day.weekday() >= 5 else _WEEKDAY_HOURS
    hours = [h for h in range(branch.opens, branch.closes) if h in profile]
    picked = rng.choices(hours, weights=[profile[h] for h in hours], k=count)
    return sorted(h * 60 + rng.randrange(60) for h in picked)


def _basket(branch: Branch, rng: random.Random, cum_weights: tuple[float, ...]) -> tuple:
    size = _BASKET_SIZES[bisect.bisect_left(_BASKET_CUM, rng.random() * 100)]
    items = rng.choices(branch.items, cum_weights=cum_weights, k=size)
    for i in range(1, size):
        if rng.random() < _REPEAT_ITEM:  # "another one of those, please"
            items[i] = items[rng.randrange(i)]
    for anchor, companion in branch.pairings:
        if anchor in items and rng.random() < PAIRING_CHANCE:
            items.append(companion)
    return tuple(items)


def _regulars_on(branch: Branch, day: date) -> tuple[list[Customer], list[float]]:
    """The branch's regulars who come in on ``day``, and their cumulative visit weights."""
    ordinal = day.toordinal()
    active = [c for c in branch.regulars if c.active_on(ordinal)]
    return active, list(itertools.accumulate(c.weight for c in active))


def _boosted_weights(branch: Branch, product: tuple) -> tuple[float, ...]:
    """The branch's cumulative item weights with ``product`` chosen ``BOOST`` times as often."""
    weights = [high - low for low, high in zip((0.0, *branch.cum_weights), branch.cum_weights, strict=False)]
    boosted = [w * BOOST if item.key == product else w for item, w in zip(branch.items, weights, strict=True)]
    return tuple(itertools.accumulate(boosted))


def _sale(branch: Branch, minute: int, rng: random.Random, regulars: tuple[list[Customer], list[float]],
          cum_weights: tuple[float, ...]) -> Sale:
    active, weights = regulars
    who = rng.random()
    if active and who < _REGULAR_SHARE:
        regular = rng.choices(active, cum_weights=weights)[0]
        name, card, card_share = regular.name, regular.card, regular.prefers_card
    elif branch.occasional_count and who < _REGULAR_SHARE + _OCCASIONAL_SHARE:
        occasional = rng.choice(occasionals(branch))
        name, card, card_share = occasional.name, occasional.card, occasional.prefers_card
    else:
        name, card, card_share = random_name(rng), "", _CARD_SHARE
    items = _basket(branch, rng, cum_weights)
    pence = sum(item.pence for item in items)
    if rng.random() < card_share:
        return Sale(minute, name, items, "CARD", card or luhn_card(rng), pence)
    return Sale(minute, name, items, "CASH", "", pence)


def _tally(truth: DayTruth, sales: list[Sale]) -> None:
    """Fold the file's genuine sales into its expected figures."""
    truth.transactions = len(sales)
    every_item = [item for sale in sales for item in sale.items]
    truth.items = len(every_item)
    truth.revenue = sum(sale.pence for sale in sales)
    for sale in sales:
        hour = sale.minute // 60
        truth.hours[hour] += 1
        truth.hour_revenue[hour] += sale.pence
        truth.payments[sale.payment] += 1
        truth.payment_revenue[sale.payment] += sale.pence
    for item, quantity in Counter(every_item).items():
        truth.products[item.key] += quantity
        truth.product_revenue[item.key] += quantity * item.pence
    truth.customers = {customer_key(sale.name, sale.card) for sale in sales}


def generate_day(
    branch: Branch, day: date, seed: int, bad_rate: float, other_branches: list[str], effects: Effects | None = None
) -> tuple[str, DayTruth]:
    """The file's text and its true figures. Same inputs, same bytes."""
    rng = random.Random(f"day:{seed}:{branch.index}:{day.isoformat()}")
    usual = branch.weekday_transactions * _DAY_FACTOR[day.weekday()] * rng.uniform(0.85, 1.15)
    cum_weights = branch.cum_weights
    if effects is not None and effects.covers(day):
        usual *= effects.transactions_factor(branch.index, day)
        cum_weights = _boosted_weights(branch, effects.boosted)
    count = max(1, round(usual))
    truth = DayTruth(branch.name, day)
    lines: list[str] = []
    seen: set[str] = set()
    good: list[Sale] = []
    regulars = _regulars_on(branch, day)
    minutes = _minutes(branch, day, count, rng)
    if effects is not None and effects.is_short(branch.index, day):
        minutes = minutes[:max(1, round(len(minutes) * SHORT))]  # the export stopped early in the day
    for minute in minutes:
        while True:
            sale = _sale(branch, minute, rng, regulars, cum_weights)
            line = format_line(day, branch.name, sale)
            kind = None
            if bad_rate and rng.random() < bad_rate:
                kind, line = faults.spoil(day, branch.name, sale, lines, other_branches, rng)
            # A genuine sale is never byte-identical to an earlier row: only the
            # DUPLICATE_ROW fault may repeat a line.
            if kind == "DUPLICATE_ROW" or line not in seen:
                break
        seen.add(line)
        lines.append(line)
        if kind is None:
            good.append(sale)
        else:
            truth.rejects[kind] += 1
    _tally(truth, good)
    truth.lines = len(lines)
    return "\n".join(lines) + "\n", truth
