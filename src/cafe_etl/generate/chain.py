"""A fictitious café chain: branches of different sizes, menus and regular customers.

Everything is derived from the seed, so any worker process can rebuild the same
chain and generate any (branch, day) file independently of the others.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from functools import lru_cache

from cafe_etl.generate import menu, people

_SUFFIXES = ("Central", "North", "South", "East", "West", "Station", "Market", "Park", "Quay")


@dataclass(frozen=True)
class Customer:
    """A regular of one branch. Regulars differ in how often they come (``weight``)
    and many come in spells: active ``active_weeks`` weeks out of every ``cycle``,
    so on any day some have just started coming, some have lapsed and some return."""

    name: str
    card: str
    prefers_card: float
    weight: float = 1.0
    cycle: int = 1  # weeks
    active_weeks: int = 1
    phase: int = 0

    def active_on(self, day_number: int) -> bool:
        """``day_number``: the day's ordinal (``date.toordinal()``)."""
        return (day_number // 7 + self.phase) % self.cycle < self.active_weeks


@dataclass(frozen=True)
class Branch:
    index: int
    name: str
    weekday_transactions: float
    opens: int  # first trading hour
    closes: int  # hour the doors shut (exclusive)
    items: tuple[menu.MenuItem, ...]
    cum_weights: tuple[float, ...]
    regulars: tuple[Customer, ...]  # come often, some in spells
    occasional_count: int = 0  # customers who come now and then, any day (see ``occasionals``)
    people_seed: int = 0
    pairings: tuple[tuple[menu.MenuItem, menu.MenuItem], ...] = ()  # menu.PAIRINGS this branch sells

    @property
    def slug(self) -> str:
        """The branch as it appears in export file names."""
        return self.name.lower().replace("'", "").replace(" ", "_")


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # Luhn: digit * 2, digits summed


def luhn_card(rng: random.Random) -> str:
    """A 16-digit number that passes the Luhn check, like a real card number."""
    body = str(rng.randrange(10**14, 10**15))
    # Counting from the check digit, every second digit is doubled: here the
    # last digit of the body and every other one before it.
    total = sum(_DOUBLED[int(d)] for d in body[-1::-2]) + sum(int(d) for d in body[-2::-2])
    return f"{body}{(10 - total % 10) % 10}"


def random_name(rng: random.Random) -> str:
    return f"{rng.choice(people.first_names())} {rng.choice(people.last_names())}"


def branch_names(count: int, rng: random.Random) -> list[str]:
    towns = people.town_names()
    rng.shuffle(towns)
    names = []
    for k in range(count):
        town, lap = towns[k % len(towns)], k // len(towns)
        if lap == 0:
            names.append(town)
        elif lap <= len(_SUFFIXES):
            names.append(f"{town} {_SUFFIXES[lap - 1]}")
        else:
            names.append(f"{town} {lap + 1}")
    return names


def _branch_menu(rng: random.Random) -> tuple[tuple[menu.MenuItem, ...], tuple[float, ...]]:
    families = menu.families()
    chosen = rng.sample(families, rng.randint(max(6, len(families) // 3), len(families)))
    items, weights = [], []
    for family in chosen:
        family_items = menu.items_of(family)
        taste = menu.family_weight(family) * rng.uniform(0.4, 1.6)
        for item in family_items:
            size_bias = 1.15 if item.size == "Regular" else 0.85
            weights.append(taste * size_bias * rng.uniform(0.5, 1.5) / len(family_items))
            items.append(item)
    return tuple(items), tuple(itertools.accumulate(weights))


def _regular(rng: random.Random) -> Customer:
    name, card, prefers_card = random_name(rng), luhn_card(rng), rng.choice((0.2, 0.6, 0.6, 0.9))
    weight = rng.lognormvariate(0.0, 1.0)  # a few come daily, most now and then
    if rng.random() < 0.3:
        return Customer(name, card, prefers_card, weight)  # always around
    cycle = rng.randint(8, 40)
    return Customer(name, card, prefers_card, weight, cycle, rng.randint(3, cycle - 2), rng.randrange(cycle))


def _regulars(rng: random.Random, count: int) -> tuple[Customer, ...]:
    return tuple(_regular(rng) for _ in range(count))


@lru_cache(maxsize=8)
def build_chain(branches: int, seed: int) -> tuple[Branch, ...]:
    rng = random.Random(f"chain:{seed}")
    out = []
    for index, name in enumerate(branch_names(branches, rng)):
        # Branch sizes are skewed: a few busy flagships, many small shops.
        weekday = min(1100.0, max(110.0, rng.lognormvariate(5.9, 0.45)))
        opens = rng.choice((8, 8, 8, 9))
        closes = rng.choice((17, 18, 20, 20, 21))
        items, cum_weights = _branch_menu(rng)
        regulars = _regulars(rng, int(weekday * rng.uniform(0.3, 0.6)))
        by_key = {item.key: item for item in items}
        pairings = tuple((by_key[a], by_key[b]) for a, b in menu.PAIRINGS if a in by_key and b in by_key)
        out.append(Branch(index, name, weekday, opens, closes, items, cum_weights, regulars,
                          int(weekday * rng.uniform(2.0, 4.0)), rng.randrange(2**32), pairings))
    return tuple(out)


@lru_cache(maxsize=256)
def occasionals(branch: Branch) -> tuple[Customer, ...]:
    """The branch's occasional customers: many, so made only where the branch's days
    are generated (each worker process makes its own branches' once)."""
    rng = random.Random(f"occasionals:{branch.people_seed}")
    return tuple(Customer(random_name(rng), luhn_card(rng), rng.choice((0.3, 0.6, 0.8)))
                 for _ in range(branch.occasional_count))
