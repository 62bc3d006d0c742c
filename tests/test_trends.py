"""`cafe-etl trends` (DESIGN §11) on generated data with planted changes of known size
(generate/effects.py), on both backends.

Movers are checked exactly against an independent count from the raw files and
SciPy's binomial test with a textbook Benjamini–Hochberg; the planted branch (down a
third), product (chosen 2.5 times as often), partial export (a third of a day) and
busy day (1.9 times) must be found, with few false alarms among the rest.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from scipy.stats import binomtest
from tests.conftest import BACKENDS, new_warehouse, run_cli
from tests.test_together import _bh, _product

from cafe_etl.analytics import trends
from cafe_etl.analytics.trends import BranchDay, Week
from cafe_etl.warehouse import open_warehouse

START = date(2024, 1, 1)  # a Monday
DAYS = 35  # the week and its four baseline weeks
LAST = START + timedelta(days=DAYS - 1)
FIRST = LAST - timedelta(days=6)
BRANCHES = 12


def read_sales(folder: Path) -> list[tuple[date, str, int, list[tuple], Decimal]]:
    """(day, branch, hour, products, total) per sale, straight from the branch files."""
    sales = []
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="") as f:
            for when, branch, _name, basket, total, *_ in csv.reader(f):
                moment = datetime.strptime(when, "%d/%m/%Y %H:%M")
                items = [_product(item) for item in basket.split(", ")]
                sales.append((moment.date(), branch, moment.hour, items, Decimal(total)))
    return sales


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trends") / "landing"
    result = run_cli("generate", folder, "--branches", BRANCHES, "--days", DAYS, "--seed", 11, "--start", START,
                     "--plant-trends")
    assert result.code == 0, result.stderr
    planted = json.loads((folder / "_expected.json").read_text())["planted"]
    return folder, read_sales(folder), planted


@pytest.fixture(scope="module", params=BACKENDS)
def loaded(request, chain, tmp_path_factory, postgres_databases) -> str:
    url = new_warehouse(request.param, tmp_path_factory.mktemp(f"trends-{request.param}"), postgres_databases)
    result = run_cli("ingest", chain[0], "--warehouse", url)
    assert result.code == 0, result.stderr
    return url


def _answer(url: str, **kwargs) -> dict:
    with open_warehouse(url).reader() as reader:
        return trends.build(reader, **kwargs)


def expected_movers(sales, branch: str | tuple | None = None, min_change: float = 20.0) -> list[dict]:
    """DESIGN §11 from the raw sales: counts per week, the conditional binomial test
    (p = 1/5 of the five weeks' count falls in the last if nothing changed), BH per kind."""
    base_first = FIRST - timedelta(days=28)
    within = {branch} if isinstance(branch, str) else set(branch or ())
    chosen = [s for s in sales if base_first <= s[0] <= LAST and (not within or s[1] in within)]
    branch = branch if isinstance(branch, str) else None  # product movers name one branch only
    now, before = Counter(), Counter()
    for day, where, _hour, items, _total in chosen:
        tally = now if day >= FIRST else before
        tally[("branch", where, None, None, None)] += 1
        for size, name, flavour in items:
            tally[("product", branch, size, name, flavour)] += 1
    found = []
    for kind in ("branch", "product"):
        keys = sorted(k for k in before if k[0] == kind)
        p_values = []
        for k in keys:
            trials = now[k] + before[k]
            low = binomtest(now[k], trials, 0.2, alternative="less").pvalue
            high = binomtest(now[k], trials, 0.2, alternative="greater").pvalue
            p_values.append(min(1.0, 2 * min(low, high)))
        for k, q in zip(keys, _bh(p_values), strict=True):
            baseline = before[k] / 4
            change = 100 * (now[k] - baseline) / baseline
            if abs(change) >= min_change and q <= 0.05:
                found.append({"who": k, "current": now[k], "baseline": round(baseline, 2),
                              "change_pct": round(change, 1), "q": q})
    return found


def _who(m: dict) -> tuple:
    return m["kind"], m["branch"], m["size"], m["name"], m["flavour"]


def test_movers_match_an_independent_count(chain, loaded):
    _, sales, _ = chain
    got = _answer(loaded)
    assert got["week"] == {"from": FIRST.isoformat(), "to": LAST.isoformat(), "baseline_weeks": 4}
    want = {m["who"]: m for m in expected_movers(sales)}
    mine = {_who(m): m for m in got["movers"]}
    assert set(mine) == set(want) and mine
    for who, m in mine.items():
        assert (m["current"], m["baseline"], m["change_pct"]) == (want[who]["current"], want[who]["baseline"],
                                                                  want[who]["change_pct"])
        assert m["q_value"] == pytest.approx(want[who]["q"], rel=1e-3, abs=1e-300)


def test_the_planted_movers_are_found_with_few_false_alarms(chain, loaded):
    _, _, planted = chain
    movers = _answer(loaded)["movers"]
    down = {m["branch"]: m for m in movers if m["kind"] == "branch"}
    assert set(planted["branches_down"]) <= set(down)
    for name in planted["branches_down"]:
        assert -45 < down[name]["change_pct"] < -22 and down[name]["q_value"] < 1e-6  # planted: -33%
    assert len(set(down) - set(planted["branches_down"])) <= 1
    product = planted["product_up"]
    up = [m for m in movers if m["kind"] == "product"]
    assert (product["size"], product["name"], product["flavour"]) in {(m["size"], m["name"], m["flavour"]) for m in up}
    rise = next(m for m in up if m["name"] == product["name"] and m["size"] == product["size"]
                and m["flavour"] == product["flavour"])
    assert rise["change_pct"] > 100 and rise["q_value"] < 1e-6
    # A product's weight going up takes picks from every other product a little: none of
    # them should move beyond the threshold.
    assert len(up) <= 2


def test_the_planted_days_are_anomalies_and_the_rest_are_not(chain, loaded):
    _, sales, planted = chain
    anomalies = _answer(loaded)["anomalies"]
    found = {(a["branch"], a["date"]): a for a in anomalies}
    for day in planted["short_days"]:
        assert found[(day["branch"], day["date"])]["kind"] == "short"
    for day in planted["busy_days"]:
        assert found[(day["branch"], day["date"])]["kind"] == "high"
    planted_cells = {(d["branch"], d["date"]) for d in planted["short_days"] + planted["busy_days"]}
    # The weaker branches' days are a third down every day: some fall below their range.
    unplanted = [a for key, a in found.items() if key not in planted_cells and a["branch"] not in
                 planted["branches_down"]]
    assert len(unplanted) <= 1, unplanted
    revenue = Counter()
    for day, branch, _hour, _items, total in sales:
        revenue[(branch, day.isoformat())] += total
    for key, a in found.items():
        assert a["revenue"] == revenue[key]
        assert a["expected_low"] <= a["expected"] <= a["expected_high"]
        assert not a["expected_low"] <= a["revenue"] <= a["expected_high"]


def test_within_one_branch(chain, loaded):
    _, sales, planted = chain
    branch = planted["branches_down"][0]
    got = _answer(loaded, branch=branch)
    assert [m["branch"] for m in got["movers"] if m["kind"] == "branch"] == [branch]  # its own fall
    want = {m["who"]: m for m in expected_movers(sales, branch=branch)}
    assert {_who(m) for m in got["movers"]} == set(want)
    assert {a["branch"] for a in got["anomalies"]} <= {branch}


def test_within_several_branches(chain, loaded):
    _, sales, planted = chain
    two = (planted["branches_down"][0], sorted({s[1] for s in sales} - set(planted["branches_down"]))[0])
    got = _answer(loaded, branch=two)
    want = {m["who"]: m for m in expected_movers(sales, branch=two)}
    assert {_who(m) for m in got["movers"]} == set(want)
    assert {m["branch"] for m in got["movers"] if m["kind"] == "branch"} <= set(two)
    assert {a["branch"] for a in got["anomalies"]} <= set(two)


def test_an_earlier_week_without_planted_changes_is_quiet(loaded):
    got = _answer(loaded, last=FIRST - timedelta(days=1))
    assert got["week"]["baseline_weeks"] == 3  # only three whole weeks before it
    assert len(got["movers"]) <= 1 and len(got["anomalies"]) <= 1


def test_cli_formats_and_errors(loaded):
    got = run_cli("trends", "--warehouse", loaded, "--format", "json").json()
    assert got["week"]["to"] == LAST.isoformat() and got["movers"] and got["anomalies"]
    text = run_cli("trends", "--warehouse", loaded, "--format", "csv").stdout.splitlines()
    assert text[0].startswith("week_from,week_to,record,kind,branch,size,name,flavour,current,baseline")
    assert len(text) == 1 + len(got["movers"]) + len(got["anomalies"])
    assert {line.split(",")[2] for line in text[1:]} == {"mover", "anomaly"}
    table = run_cli("trends", "--warehouse", loaded)
    assert table.code == 0 and "Movers" in table.stdout and "Days out of the ordinary" in table.stdout
    if not loaded.startswith("duckdb"):
        return  # the errors are the command's own, not the backend's
    for bad in (["--min-change", "-5"], ["--branch", "Atlantis"], ["--to", "not-a-day"]):
        result = run_cli("trends", "--warehouse", loaded, *bad)
        assert result.code != 0 and "Traceback" not in result.stderr, bad
        assert result.stderr.strip()


def test_an_empty_warehouse_has_nothing_to_say(tmp_path):
    url = f"duckdb:///{tmp_path / 'empty.duckdb'}"
    (tmp_path / "landing").mkdir()
    assert run_cli("ingest", tmp_path / "landing", "--warehouse", url).code == 0
    result = run_cli("trends", "--warehouse", url, "--format", "json")
    assert result.code == 0, result.stderr
    assert result.json() == {"week": {"from": None, "to": None, "baseline_weeks": 0}, "movers": [], "anomalies": []}


# The anomaly rule on hand-made histories -----------------------------------------


def _history(weeks: int = 8, level: float = 1000.0, close: int = 18) -> dict[date, BranchDay]:
    """A branch with a weekday pattern (Saturdays half again), ±4% of day-to-day noise."""
    days = {}
    first = FIRST - timedelta(days=7 * weeks)
    for k in range(7 * weeks):
        day = first + timedelta(days=k)
        noise = 1 + 0.04 * ((k * 7919) % 11 - 5) / 5
        days[day] = BranchDay(level * (1.5 if day.weekday() == 5 else 1.0) * noise, close)
    return days


WEEK = Week(FIRST, LAST, 4, None)


def _kinds(days: dict[date, BranchDay]) -> dict[str, str]:
    return {a["date"]: a["kind"] for a in trends._branch_anomalies("Leeds", days, WEEK)}


def _ordinary_week(days: dict[date, BranchDay]) -> dict[date, BranchDay]:
    for k in range(7):
        day = FIRST + timedelta(days=k)
        days[day] = BranchDay(1000.0 * (1.5 if day.weekday() == 5 else 1.0), 18)
    return days


def test_an_ordinary_week_has_no_anomaly_and_saturday_is_not_high():
    assert _kinds(_ordinary_week(_history())) == {}


def test_missing_short_low_and_high_days():
    days = _ordinary_week(_history())
    week = [FIRST + timedelta(days=k) for k in range(7)]
    del days[week[0]]  # no sales at all
    days[week[1]] = BranchDay(330.0, 11)  # a third, and it stopped at 11:00
    days[week[2]] = BranchDay(330.0, 18)  # a third, all day long
    days[week[3]] = BranchDay(1900.0, 18)
    assert _kinds(days) == {week[0].isoformat(): "missing", week[1].isoformat(): "short",
                            week[2].isoformat(): "low", week[3].isoformat(): "high"}


def test_a_new_branch_or_a_closed_weekday_is_not_judged():
    assert _kinds({FIRST: BranchDay(10.0, 12)}) == {}
    days = _ordinary_week(_history())
    closed = {d: v for d, v in days.items() if d.weekday() != 6}  # never opens on Sundays
    assert _kinds(closed) == {}


# The same answers through the JSON API and /metrics ----------------------------------


@pytest.fixture(scope="module")
def client(loaded):
    from fastapi.testclient import TestClient

    from cafe_etl.config import Settings
    from cafe_etl.web.app import create_app

    with TestClient(create_app(Settings(warehouse=loaded))) as client:
        yield client


def _get(client, path, **params) -> dict:
    response = client.get(path, params=params)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def _plain(rows: list[dict]) -> list[dict]:
    return json.loads(json.dumps(rows, default=float))


def test_the_api_answers_as_the_command(loaded, client):
    want = _answer(loaded)
    movers = _get(client, "/api/trends/movers")
    assert movers["week"] == want["week"]
    got = movers["data"]["movers"]
    assert [{k: v for k, v in m.items() if k != "daily"} for m in got] == _plain(want["movers"])
    dates = movers["data"]["dates"]
    assert dates[0] == (FIRST - timedelta(days=28)).isoformat() and dates[-1] == LAST.isoformat() and len(dates) == 35
    for m in got:  # the sparkline adds up to the figures it draws
        assert sum(m["daily"][-7:]) == m["current"] and sum(m["daily"][:28]) / 4 == pytest.approx(m["baseline"])
    assert _get(client, "/api/trends/anomalies")["data"] == _plain(want["anomalies"])
    branch = want["anomalies"][0]["branch"]
    narrowed = _get(client, "/api/trends/anomalies", branch=branch.lower())["data"]
    assert narrowed == _plain([a for a in _answer(loaded, branch=branch)["anomalies"]])
    earlier = (FIRST - timedelta(days=1)).isoformat()
    assert _get(client, "/api/trends/movers", to=earlier)["week"]["to"] == earlier
    stricter = _get(client, "/api/trends/movers", min_change=120)["data"]["movers"]
    assert [m["kind"] for m in stricter] == ["product"]  # only the product more than doubled
    bad = client.get("/api/trends/movers", params={"min_change": "-1"})
    assert bad.status_code == 400 and "min_change" in bad.json()["error"]


def test_suspect_days_on_operations_and_in_metrics(chain, loaded, client):
    _, _, planted = chain
    anomalies = _answer(loaded)["anomalies"]
    suspect = _get(client, "/api/ops/suspect-days")["data"]
    assert suspect == _plain([a for a in anomalies if a["kind"] in ("short", "missing")])
    assert {(d["branch"], d["date"]) for d in planted["short_days"]} <= {(a["branch"], a["date"]) for a in suspect}
    metrics = {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
               for line in client.get("/metrics").text.splitlines() if line.startswith("cafe_etl_suspect")}
    for kind in ("missing", "short", "low", "high"):
        assert metrics[f'cafe_etl_suspect_branch_days{{kind="{kind}"}}'] == sum(a["kind"] == kind for a in anomalies)


def test_pairs_and_what_goes_well_with_a_product(chain, loaded, client):
    from cafe_etl.analytics import together
    from cafe_etl.analytics.report import Filters

    branch = sorted({s[1] for s in chain[1]})[0]  # one branch keeps this quick on PostgreSQL under load
    with open_warehouse(loaded).reader() as reader:
        want = together.build(reader, Filters(branch=branch), 5)
    got = _get(client, "/api/together/pairs", branch=branch, min_baskets=5, limit=5)
    assert got["period"] == want["period"] and got["branch"] == branch
    assert got["data"]["baskets"] == want["baskets"] and got["data"]["listed"] == len(want["pairs"])
    assert got["data"]["pairs"] == _plain(want["pairs"][:5])
    top = want["pairs"][0]
    product = top["a"]
    goes = _get(client, "/api/together/with", branch=branch, min_baskets=5, name=product["name"],
                size=product["size"] or "", flavour=product["flavour"] or "")["data"]
    assert goes[0] == {"product": top["b"], "baskets": top["baskets"], "confidence": top["confidence_ab"],
                       "lift": top["lift"], "q_value": top["q_value"]}
    partners = [p for p in want["pairs"] if product in (p["a"], p["b"])]
    assert len(goes) == min(10, len(partners))
    lifts = [g["lift"] for g in goes]
    assert lifts == sorted(lifts, reverse=True)
    assert _get(client, "/api/together/with", branch=branch, name="No such drink")["data"] == []
