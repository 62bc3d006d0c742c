"""`cafe-etl together` (DESIGN §11) against an independent count from the raw baskets, and
against an established implementation (efficient-apriori), on both backends.

The generator plants pairs (menu.PAIRINGS: with the first product in a basket, the
second is added a third of the time): they must come out on top, and significant.
"""

from __future__ import annotations

import csv
import itertools
import shutil
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from efficient_apriori import apriori
from scipy.stats import fisher_exact
from tests.conftest import BACKENDS, chain_pair_mismatches, customer_mismatches, new_warehouse, query, run_cli

from cafe_etl.analytics import together
from cafe_etl.analytics.report import Filters
from cafe_etl.generate.menu import PAIRINGS
from cafe_etl.warehouse import open_warehouse

START = date(2024, 3, 4)
DAYS = 14
MIN_BASKETS = 20


def _product(item: str) -> tuple:
    label, _price = item.rsplit(" - ", 1)
    size, rest = label.split(" ", 1)
    name, _, flavour = rest.partition(" - ")
    return size, name, flavour or None


def read_baskets(folder: Path) -> list[tuple[date, str, frozenset]]:
    baskets = []
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="") as f:
            for when, branch, _name, basket, *_ in csv.reader(f):
                day = datetime.strptime(when, "%d/%m/%Y %H:%M").date()
                baskets.append((day, branch, frozenset(_product(item) for item in basket.split(", "))))
    return baskets


def _bh(p_values: list[float]) -> list[float]:
    """Benjamini–Hochberg as the textbook writes it: sort descending, running minimum."""
    m = len(p_values)
    ranked = sorted(enumerate(p_values), key=lambda x: x[1], reverse=True)
    adjusted, best = [0.0] * m, 1.0
    for position, (i, p) in enumerate(ranked):
        best = min(best, p * m / (m - position))
        adjusted[i] = best
    return adjusted


def expected_pairs(baskets, first: date, last: date, branch: str | None, min_baskets: int) -> dict:
    chosen = [items for day, b, items in baskets if first <= day <= last and (branch is None or b == branch)]
    total = len(chosen)
    singles = Counter(p for items in chosen for p in items)
    doubles = Counter(pair for items in chosen for pair in itertools.combinations(sorted(items, key=_key), 2))
    kept = {pair: n for pair, n in doubles.items() if n >= min_baskets}
    p_values = {pair: fisher_exact([[n, singles[pair[0]] - n], [singles[pair[1]] - n,
                                    total - singles[pair[0]] - singles[pair[1]] + n]], alternative="greater")[1]
                for pair, n in kept.items()}
    q = dict(zip(p_values, _bh(list(p_values.values())), strict=True))
    return {"baskets": total, "singles": singles, "pairs": kept, "q": q}


def _key(product: tuple) -> tuple:
    size, name, flavour = product
    return name, size, flavour or ""


def _as_tuple(p: dict) -> tuple:
    return p["size"], p["name"], p["flavour"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("together") / "landing"
    result = run_cli("generate", folder, "--branches", 6, "--days", DAYS, "--seed", 5, "--start", START)
    assert result.code == 0, result.stderr
    return folder, read_baskets(folder)


@pytest.fixture(scope="module", params=BACKENDS)
def loaded(request, chain, tmp_path_factory, postgres_databases) -> str:
    url = new_warehouse(request.param, tmp_path_factory.mktemp(f"together-{request.param}"), postgres_databases)
    result = run_cli("ingest", chain[0], "--warehouse", url)
    assert result.code == 0, result.stderr
    return url


LAST = START + timedelta(days=DAYS - 1)


@pytest.mark.parametrize("args, first, last, pick_branch", [
    ([], START, LAST, False),  # the default: the last 28 days with data, here all of them
    (["--from", "2024-03-06", "--to", "2024-03-12"], date(2024, 3, 6), date(2024, 3, 12), False),
    ([], START, LAST, True),
])
def test_pairs_match_an_independent_count(chain, loaded, args, first, last, pick_branch):
    _, baskets = chain
    branch = sorted({b for _, b, _ in baskets})[0] if pick_branch else None
    # In process (the command itself is run by the tests below): the same call the CLI makes.
    filters = Filters(first if args else None, last if args else None, branch)
    with open_warehouse(loaded).reader() as reader:
        got = together.build(reader, filters, MIN_BASKETS)
    want = expected_pairs(baskets, first, last, branch, MIN_BASKETS)
    assert got["period"] == {"from": first.isoformat(), "to": last.isoformat()}
    assert got["baskets"] == want["baskets"]
    pairs = {(_as_tuple(p["a"]), _as_tuple(p["b"])): p for p in got["pairs"]}
    assert set(pairs) == set(want["pairs"]) and pairs
    n = want["baskets"]
    for (a, b), p in pairs.items():
        n_ab, n_a, n_b = want["pairs"][(a, b)], want["singles"][a], want["singles"][b]
        assert (p["baskets"], p["a_baskets"], p["b_baskets"]) == (n_ab, n_a, n_b)
        assert p["support"] == round(n_ab / n, 6) and p["lift"] == round(n_ab * n / (n_a * n_b), 4)
        assert (p["confidence_ab"], p["confidence_ba"]) == (round(n_ab / n_a, 4), round(n_ab / n_b, 4))
        assert p["q_value"] == pytest.approx(want["q"][(a, b)], rel=1e-3, abs=1e-300)
    lifts = [(p["lift"], p["baskets"]) for p in got["pairs"]]
    assert lifts == sorted(lifts, key=lambda x: (-x[0], -x[1]))


def _matches_the_raw_files(url: str, landing: Path) -> None:
    with open_warehouse(url).reader() as reader:
        got = together.build(reader, Filters(), MIN_BASKETS)
    want = expected_pairs(read_baskets(landing), START, LAST, None, MIN_BASKETS)
    counted = {(_as_tuple(p["a"]), _as_tuple(p["b"])): (p["baskets"], p["a_baskets"], p["b_baskets"])
               for p in got["pairs"]}
    assert got["baskets"] == want["baskets"] and counted
    assert counted == {(a, b): (n, want["singles"][a], want["singles"][b]) for (a, b), n in want["pairs"].items()}


def _unusual_day(path: Path, basket: str, total: str) -> None:
    """A small export of 5 March: three sales of one basket."""
    path.write_text("".join(f"05/03/2024 09:0{n},Leeds,Guest {n},\"{basket}\",{total},CASH,\n" for n in range(3)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_chains_pairs_per_day_follow_replaced_files(chain, backend, tmp_path, postgres_databases):
    """Every-branch answers read the chain's pairs per day, which loads keep: when files
    are exported again, the old versions' pairs leave those days and the new ones come
    in, and a pair that no sale of a day holds any longer leaves the day."""
    landing = tmp_path / "landing"
    shutil.copytree(chain[0], landing)
    unusual = landing / "leeds_05-03-2024_09-00-00.csv"
    _unusual_day(unusual, "Large Unicorn Latte - 3.00, Regular Dragon Tea - 2.00", "5.00")
    url = new_warehouse(backend, tmp_path, postgres_databases)
    rare = """SELECT a.sales FROM agg_pair_date a JOIN dim_product p ON p.product_key IN (a.a_key, a.b_key)
              WHERE p.name = 'Dragon Tea'"""
    assert run_cli("ingest", landing, "--warehouse", url).code == 0
    assert query(url, rare) == [(3,)] and chain_pair_mismatches(url) == [] == customer_mismatches(url)
    _matches_the_raw_files(url, landing)
    # Two branches export their day again: one with half its sales, one with its sizes
    # changed (other products, so other pairs); the unusual day without the rare pair.
    half, resized = sorted(landing.glob("*.csv"))[:2]
    lines = half.read_text().splitlines(keepends=True)
    half.write_text("".join(lines[: len(lines) // 2]))
    resized.write_text(resized.read_text().replace("Large ", "Small "))
    _unusual_day(unusual, "Large Unicorn Latte - 3.00", "3.00")
    result = run_cli("ingest", landing, "--warehouse", url, "--json")
    assert result.code == 0 and result.json()["files"]["reloaded"] == 3, result.stderr
    assert query(url, rare) == [] and chain_pair_mismatches(url) == [] == customer_mismatches(url)
    _matches_the_raw_files(url, landing)
    postgres_databases.drop(url)


def test_the_planted_pairs_come_out_on_top_and_significant(chain, loaded):
    got = run_cli("together", "--warehouse", loaded, "--format", "json").json()
    planted = {tuple(sorted(pair, key=_key)) for pair in PAIRINGS}
    top = [(_as_tuple(p["a"]), _as_tuple(p["b"])) for p in got["pairs"][:len(planted)]]
    assert set(top) == planted
    assert all(p["q_value"] <= 0.05 and p["lift"] > 2 for p in got["pairs"][:len(planted)])


def test_counts_agree_with_efficient_apriori(chain, loaded):
    _, baskets = chain
    transactions = [tuple(sorted(items, key=_key)) for _, _, items in baskets]
    itemsets, _ = apriori(transactions, min_support=MIN_BASKETS / len(transactions), max_length=2)
    with open_warehouse(loaded).reader() as reader:
        got = together.build(reader, Filters(), MIN_BASKETS)
    ours = {frozenset((_as_tuple(p["a"]), _as_tuple(p["b"]))): p["baskets"] for p in got["pairs"]}
    theirs = {frozenset(pair): n for pair, n in itemsets[2].items()}
    assert ours == theirs
    for p in got["pairs"]:
        assert itemsets[1][(_as_tuple(p["a"]),)] == p["a_baskets"]


def test_csv_and_table(loaded):
    text = run_cli("together", "--warehouse", loaded, "--format", "csv").stdout.splitlines()
    assert text[0].startswith("from,to,sales,a_size,a_name,a_flavour,b_size,b_name,b_flavour,baskets")
    assert len(text) > 3
    table = run_cli("together", "--warehouse", loaded)
    assert table.code == 0 and "Bought together" in table.stdout
    bad = run_cli("together", "--warehouse", loaded, "--min-baskets", "0")
    assert bad.code == 2 and "Traceback" not in bad.stderr


def test_the_commands_need_no_scipy(monkeypatch, loaded):
    """SciPy is a test dependency only: the tests hold our exact tails against it."""
    import sys

    from cafe_etl.analytics import trends

    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    monkeypatch.setitem(sys.modules, "scipy.special", None)
    with open_warehouse(loaded).reader() as reader:
        assert together.build(reader, Filters(), MIN_BASKETS)["pairs"]
        assert trends.build(reader)["week"]["to"] == LAST.isoformat()
