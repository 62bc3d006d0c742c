"""The generator: realistic, deterministic, and its truth consistent with its files."""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import date
from decimal import Decimal

from cafe_etl.generate import generate
from cafe_etl.generate.chain import build_chain
from cafe_etl.generate.day import generate_day
from cafe_etl.generate.menu import PAIRINGS


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = generate(tmp_path / "a", branches=4, days=3, seed=5, workers=1)
    b = generate(tmp_path / "b", branches=4, days=3, seed=5, workers=2)
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes()
    assert a.transactions == b.transactions
    c = generate(tmp_path / "c", branches=4, days=3, seed=6, workers=1)
    assert c.transactions != a.transactions


def test_file_names_are_canonical(tmp_path):
    generate(tmp_path, branches=3, days=2, seed=1, start=date(2024, 3, 4))
    names = sorted(p.name for p in tmp_path.glob("*.csv"))
    assert len(names) == 6
    for name in names:
        branch, day, time = name[:-4].rsplit("_", 2)
        assert branch == branch.lower() and " " not in branch
        assert day in ("04-03-2024", "05-03-2024") and time.endswith("-00-00")


def test_rows_are_realistic():
    chain = build_chain(10, 3)
    text, truth = generate_day(chain[0], date(2024, 3, 4), 3, 0.0, [])
    rows = list(csv.reader(text.splitlines()))
    assert all(len(r) == 7 for r in rows)
    hours = Counter(int(r[0][11:13]) for r in rows)
    assert min(hours) >= 8 and max(hours) <= 20
    payments = Counter(r[5] for r in rows)
    assert 0.45 < payments["CARD"] / len(rows) < 0.75
    sizes = Counter(r[3].count(", ") + 1 for r in rows)
    # 1 to 6 items, and a planted companion for each planted pair's first product
    assert set(sizes) <= set(range(1, 7 + len(PAIRINGS))) and sizes[1] > sizes[6]
    for r in rows:
        prices = [Decimal(item.rsplit(" - ", 1)[1]) for item in r[3].split(", ")]
        assert sum(prices) == Decimal(r[4])
        assert (r[5] == "CARD") == bool(r[6])
    assert truth.transactions == len(rows)


def test_branches_differ_in_size_and_menu():
    chain = build_chain(30, 2)
    sizes = [b.weekday_transactions for b in chain]
    assert max(sizes) > 2 * min(sizes)
    assert len({tuple(i.key for i in b.items) for b in chain}) == 30
    names = {b.name for b in chain}
    assert len(names) == 30


def test_both_hot_chocolates_are_on_the_menu():
    from cafe_etl.generate.menu import full_menu

    items = {(i.size, i.name): i.pence for i in full_menu()}
    assert items[("Regular", "Hot Chocolate")] == 140 and items[("Large", "Hot Chocolate")] == 170
    assert items[("Regular", "Hot chocolate")] == 220 and items[("Large", "Hot chocolate")] == 290


def test_bad_rate_spoils_that_share_with_every_kind(tmp_path):
    result = generate(tmp_path, branches=6, days=4, seed=2, bad_rate=0.1)
    expected = json.loads(result.expected_path.read_text())
    rejects = expected["report"]["quality"]["rejects_by_reason"]
    assert len(rejects) == 11
    share = result.rejected / result.lines
    assert 0.07 < share < 0.13
    assert expected["report"]["totals"]["transactions"] + result.rejected == result.lines
