"""Changes planted in the last week of a generated period, for ``trends`` to find.

With ``generate --plant-trends``, the last seven days differ from the weeks before
in ways of known size, chosen from the seed:

- a few branches lose a third of their sales all week (movers, down);
- one product is chosen two and a half times as often (a mover more than doubling);
- a few branch-days are a partial till export: only the first third of the day's
  sales (an anomaly, and an operations signal);
- a few other branch-days trade at 1.9 times their usual level (an anomaly, high).

Every other branch, product and day is left as it would have been, so whatever
``trends`` reports beyond these is a false alarm. The plan is in ``_expected.json``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

from cafe_etl.generate import menu
from cafe_etl.generate.chain import build_chain

WEAKER = 2 / 3  # of the usual transactions, all week
BOOST = 2.5  # the chosen product's weight among a basket's picks
SHORT = 1 / 3  # the share of the day's sales a partial export holds
BUSY = 1.9  # a day's transactions, against usual
WEEK = 7


@dataclass(frozen=True)
class Effects:
    first: date  # the week's first and last days
    last: date
    weaker: frozenset[int]  # branch indices
    boosted: tuple[str, str, str | None]  # product key (size, name, flavour)
    short_days: frozenset[tuple[int, date]]
    busy_days: frozenset[tuple[int, date]]

    def covers(self, day: date) -> bool:
        return self.first <= day <= self.last

    def transactions_factor(self, index: int, day: date) -> float:
        if not self.covers(day):
            return 1.0
        factor = WEAKER if index in self.weaker else 1.0
        return factor * (BUSY if (index, day) in self.busy_days else 1.0)

    def is_short(self, index: int, day: date) -> bool:
        return (index, day) in self.short_days

    def describe(self, names: list[str]) -> dict:
        """The plan as ``_expected.json`` holds it: names and days, not indices."""
        size, name, flavour = self.boosted
        days = lambda cells: [{"branch": names[i], "date": d.isoformat()} for i, d in sorted(cells)]  # noqa: E731
        return {"week": {"from": self.first.isoformat(), "to": self.last.isoformat()},
                "branches_down": sorted(names[i] for i in self.weaker), "branch_factor": round(WEAKER, 4),
                "product_up": {"size": size, "name": name, "flavour": flavour}, "product_weight": BOOST,
                "short_days": days(self.short_days), "short_share": round(SHORT, 4),
                "busy_days": days(self.busy_days), "busy_factor": BUSY}


@lru_cache(maxsize=8)
def plan(branches: int, seed: int, start: date, days: int) -> Effects:
    """The effects of a generated period: the same for every worker process."""
    rng = random.Random(f"effects:{seed}")
    last = start + timedelta(days=days - 1)
    first = max(start, last - timedelta(days=WEEK - 1))
    week = [first + timedelta(days=k) for k in range((last - first).days + 1)]
    few = max(1, branches // 40)
    order = rng.sample(range(branches), branches)
    weaker = frozenset(order[:few]) if branches > 1 else frozenset()
    others = order[few:] or order
    short = frozenset((others[k % len(others)], rng.choice(week)) for k in range(few))
    busy = frozenset((others[(few + k) % len(others)], rng.choice(week)) for k in range(few)) - short
    return Effects(first, last, weaker, _boosted(branches, seed, rng), short, busy)


def _boosted(branches: int, seed: int, rng: random.Random) -> tuple[str, str, str | None]:
    """A product most branches sell, not one of the planted pairs: its rise is its own."""
    chain = build_chain(branches, seed)
    paired = {key for pair in menu.PAIRINGS for key in pair}
    sold = {}
    for branch in chain:
        for item in branch.items:
            sold[item.key] = sold.get(item.key, 0) + 1
    widely = sorted(key for key, count in sold.items() if count * 2 >= len(chain) and key not in paired)
    return rng.choice(widely or sorted(sold))
