"""`cafe-etl customers` (DESIGN §11) against an independent computation from the raw files.

The chain is generated with a realistic customer population: regulars whose visit
rates vary and who come in spells (so some lapse and some return), occasional
customers, and passers-by seen once (newcomers every day). Every figure is computed
here again in plain Python from the CSV files themselves, following DESIGN §8 and
§11 word for word, and compared exactly with the CLI on both backends, the target
lists (by the keys a CRM derives) and the dashboard's API.
"""

from __future__ import annotations

import bisect
import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import BACKENDS, chain_pair_mismatches, customer_mismatches, new_warehouse, query, run_cli

from cafe_etl.analytics.jsonout import dumps
from cafe_etl.config import Settings
from cafe_etl.keys import customer_key
from cafe_etl.web.app import create_app

SECRET_HEX = "5eed" * 16
START = date(2024, 1, 3)  # a Wednesday: the first cohort week is cut short
DAYS = 50

# DESIGN §11's segments, written out again from the text: (name, R scores, F scores).
SEGMENTS = [
    ("Champions", {5}, {4, 5}), ("Loyal", {3, 4}, {4, 5}), ("Potential Loyalists", {4, 5}, {2, 3}),
    ("Recent One-Timers", {5}, {1}), ("Promising", {4}, {1}), ("Need Attention", {3}, {3}),
    ("About to Sleep", {3}, {1, 2}), ("At Risk", {1, 2}, {3, 4}), ("Can't Lose", {1, 2}, {5}),
    ("Hibernating", {1, 2}, {1, 2}),
]


@dataclass
class Sale:
    day: date
    branch: str
    who: tuple[str, str]  # (name as written, card digits or "" for cash)
    total: Decimal


@dataclass
class Truth:
    sales: list[Sale] = field(default_factory=list)

    def in_scope(self, first: date, last: date, branch: str | None = None) -> list[Sale]:
        return [s for s in self.sales if first <= s.day <= last and (branch is None or s.branch == branch)]

    def first_ever(self) -> dict[tuple, date]:
        first: dict[tuple, date] = {}
        for s in self.sales:
            first[s.who] = min(first.get(s.who, s.day), s.day)
        return first


def _identity(name: str, card: str) -> tuple[str, str]:
    return " ".join(name.lower().split()), card


def read_truth(folder: Path) -> Truth:
    truth = Truth()
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="") as f:
            for when, branch, name, _basket, total, payment, card in csv.reader(f):
                day = datetime.strptime(when, "%d/%m/%Y %H:%M").date()
                who = _identity(name, card if payment == "CARD" else "")
                truth.sales.append(Sale(day, branch, who, Decimal(total)))
    return truth


def _rank(values: dict, key) -> dict:
    """RANK() OVER (ORDER BY key): 1 + how many come strictly before; ties share the lowest."""
    ordered = sorted(key(v) for v in values.values())
    return {k: 1 + bisect.bisect_left(ordered, key(v)) for k, v in values.items()}


def expected_answer(truth: Truth, first: date, last: date, branch: str | None = None) -> dict:
    """DESIGN §8 and §11, from the raw sales."""
    per: dict[tuple, dict] = {}
    days: dict[tuple, set] = defaultdict(set)
    for s in truth.in_scope(first, last, branch):
        c = per.setdefault(s.who, {"sales": 0, "revenue": Decimal(0), "first": s.day, "last": s.day})
        c["sales"] += 1
        c["revenue"] += s.total
        c["first"], c["last"] = min(c["first"], s.day), max(c["last"], s.day)
        days[s.who].add(s.day)
    n = len(per)
    ever = truth.first_ever()
    recency = {k: (last - c["last"]).days for k, c in per.items()}
    # R orders by recency_days DESC: rank = 1 + customers whose recency is larger.
    by_recency = sorted(recency.values())
    r_rank = {k: 1 + n - bisect.bisect_right(by_recency, mine) for k, mine in recency.items()}
    f_rank = _rank(per, lambda c: c["sales"])
    m_rank = _rank(per, lambda c: c["revenue"])
    score = {k: {"r": 1 + 5 * (r_rank[k] - 1) // n, "f": 1 + 5 * (f_rank[k] - 1) // n,
                 "m": 1 + 5 * (m_rank[k] - 1) // n} for k in per}
    for sc in score.values():
        sc["segment"] = next(name for name, rs, fs in SEGMENTS if sc["r"] in rs and sc["f"] in fs)
    segments = []
    for name, _, _ in SEGMENTS:
        members = [k for k in per if score[k]["segment"] == name]
        segments.append({"segment": name, "customers": len(members), "sales": sum(per[k]["sales"] for k in members),
                         "revenue": float(sum((per[k]["revenue"] for k in members), Decimal(0)))})
    frequency = [{"sales": str(i), "customers": sum(1 for c in per.values() if c["sales"] == i)} for i in range(1, 10)]
    frequency.append({"sales": "10+", "customers": sum(1 for c in per.values() if c["sales"] >= 10)})
    new = sum(1 for k in per if ever[k] >= first)
    counts = {"distinct": n, "new": new, "returning": n - new, "repeat": sum(1 for k in per if len(days[k]) >= 2)}
    cohorts = []
    if branch is None:
        monday = first + timedelta(days=(7 - first.weekday()) % 7)
        while monday <= last:
            members = {k for k, d in ever.items() if monday <= d <= monday + timedelta(days=6)}
            if members:
                ended = ((last - monday).days + 1) // 7
                active = [set() for _ in range(ended)]
                for s in truth.sales:
                    week = (s.day - monday).days // 7
                    if s.who in members and 0 <= week < ended:
                        active[week].add(s.who)
                cohorts.append({"week": monday.isoformat(), "customers": len(members),
                                "retention": [round(len(a) / len(members), 4) for a in active]})
            monday += timedelta(days=7)
    return {"period": {"from": first.isoformat(), "to": last.isoformat()}, "customers": counts,
            "segments": segments, "frequency": frequency, "cohorts": cohorts, "_per": per, "_score": score,
            "_recency": recency}


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> tuple[Path, Truth]:
    folder = tmp_path_factory.mktemp("customers") / "landing"
    result = run_cli("generate", folder, "--branches", 4, "--days", DAYS, "--seed", 21, "--start", START)
    assert result.code == 0, result.stderr
    return folder, read_truth(folder)


@pytest.fixture(scope="module", params=BACKENDS)
def loaded(request, chain, tmp_path_factory, postgres_databases) -> str:
    folder, _ = chain
    url = new_warehouse(request.param, tmp_path_factory.mktemp(f"customers-{request.param}"), postgres_databases)
    result = run_cli("ingest", folder, "--warehouse", url, env={"CAFE_ETL_CUSTOMER_KEY": SECRET_HEX})
    assert result.code == 0, result.stderr
    return url


def _public(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if not k.startswith("_")}


LAST = START + timedelta(days=DAYS - 1)
SCOPES = [
    ([], LAST - timedelta(days=27), LAST, None),  # the default: the last 28 days with data
    (["--from", "2024-01-10", "--to", "2024-02-20"], date(2024, 1, 10), date(2024, 2, 20), None),
    (["--from", START.isoformat(), "--to", "2024-01-31"], START, date(2024, 1, 31), None),
    # The whole history, read from each customer's sales to date: exactly, and with days around it.
    (["--from", START.isoformat(), "--to", LAST.isoformat()], START, LAST, None),
    (["--from", "2023-12-25", "--to", "2024-03-31"], date(2023, 12, 25), date(2024, 3, 31), None),
]


@pytest.mark.parametrize("args, first, last, branch", SCOPES)
def test_customers_match_an_independent_computation(chain, loaded, args, first, last, branch):
    _, truth = chain
    result = run_cli("customers", "--warehouse", loaded, "--format", "json", *args)
    assert result.code == 0, result.stderr
    got, want = result.json(), _public(expected_answer(truth, first, last, branch))
    assert got == want
    # The population is realistic enough to fill most segments and every cohort.
    assert sum(1 for s in got["segments"] if s["customers"]) >= 6
    assert got["customers"]["new"] > 0 and got["customers"]["repeat"] > 0
    assert (got["customers"]["returning"] > 0) == (first > START)  # nobody returns in the first period


def test_one_branch_and_the_report_agree(chain, loaded):
    _, truth = chain
    branch = truth.sales[0].branch
    got = run_cli("customers", "--warehouse", loaded, "--format", "json", "--branch", branch.upper()).json()
    assert got == _public(expected_answer(truth, LAST - timedelta(days=27), LAST, branch))
    assert got["cohorts"] == []  # cohorts are chain-wide
    report = run_cli("report", "--warehouse", loaded, "--format", "json", "--from", got["period"]["from"],
                     "--branch", branch).json()
    assert report["customers"] == got["customers"]


def test_a_target_list_names_each_customer_of_the_segment_by_the_key_a_crm_derives(chain, loaded, tmp_path):
    _, truth = chain
    want = expected_answer(truth, LAST - timedelta(days=27), LAST)
    secret = bytes.fromhex(SECRET_HEX)
    for segment in ("Champions", "At Risk"):
        out = tmp_path / f"{segment}.csv"
        result = run_cli("customers", "--warehouse", loaded, "--list", segment.lower(), "--out", out)
        assert result.code == 0, result.stderr
        assert f"{segment} customers" in result.stderr and (out.stat().st_mode & 0o077) == 0
        with out.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["customer_key", "segment", "r", "f", "m", "recency_days", "sales", "revenue",
                                 "first_sale", "last_sale"]
        members = {customer_key(secret, who[0], who[1]): who for who, sc in want["_score"].items()
                   if sc["segment"] == segment}
        assert {int(r["customer_key"]) for r in rows} == set(members) and members
        for r in rows:
            who = members[int(r["customer_key"])]
            c, sc = want["_per"][who], want["_score"][who]
            assert (r["segment"], int(r["r"]), int(r["f"]), int(r["m"])) == (segment, sc["r"], sc["f"], sc["m"])
            assert int(r["recency_days"]) == want["_recency"][who] and int(r["sales"]) == c["sales"]
            assert Decimal(r["revenue"]) == c["revenue"]
            assert (r["first_sale"], r["last_sale"]) == (c["first"].isoformat(), c["last"].isoformat())
        text = out.read_text()
        assert not any(who[0] in text for who in members.values())  # keys only: never a name


def _weekly(truth: Truth, first: date, last: date, branch: str | None = None) -> list[dict]:
    """Each week (Monday to Sunday, cut to the period): its customers, and those whose
    first sale ever is in it."""
    first_ever = truth.first_ever()
    out, monday = [], first - timedelta(days=first.weekday())
    while monday <= last:
        start, end = max(monday, first), min(monday + timedelta(days=6), last)
        seen = {s.who for s in truth.in_scope(start, end, branch) if s.who[0] or s.who[1]}
        new = sum(1 for who in seen if start <= first_ever[who] <= end)
        out.append({"week": monday.isoformat(), "from": start.isoformat(), "to": end.isoformat(),
                    "customers": len(seen), "new": new, "returning": len(seen) - new})
        monday += timedelta(days=7)
    return out


def test_weekly_new_and_returning_customers_match_an_independent_computation(chain, loaded):
    """Per week, for all branches (new counted from the dimension) and for one branch
    (new matched customer by customer): the same as the raw files say."""
    _, truth = chain
    client = TestClient(create_app(Settings(warehouse=loaded)))
    branch = sorted({s.branch for s in truth.sales})[0]
    for first, last, chosen in ((date(2024, 1, 10), date(2024, 2, 20), None), (START, LAST, branch)):
        params = {"from": first.isoformat(), "to": last.isoformat(), **({"branch": chosen} if chosen else {})}
        got = client.get("/api/customers/weekly", params=params).json()["data"]
        assert got == _weekly(truth, first, last, chosen)
        assert any(w["new"] for w in got) and any(w["returning"] for w in got)


def test_every_dashboard_customer_figure_agrees_with_the_cli(chain, loaded):
    _, truth = chain
    client = TestClient(create_app(Settings(warehouse=loaded)))
    for args, first, last, _ in SCOPES:
        cli = run_cli("customers", "--warehouse", loaded, "--format", "json", *args).json()
        params = {"from": first.isoformat(), "to": last.isoformat()} if args else {}
        api = {path: client.get(f"/api/customers/{path}", params=params).json() for path in
               ("counts", "rfm", "cohorts", "weekly", "repeat")}
        assert all(body["period"] == cli["period"] for body in api.values())
        assert api["counts"]["data"] == cli["customers"]
        assert [{k: v for k, v in s.items() if k != "meaning"} for s in api["rfm"]["data"]["segments"]] == \
            cli["segments"]
        assert api["rfm"]["data"]["frequency"] == cli["frequency"]
        assert api["cohorts"]["data"] == cli["cohorts"]
        assert sum(w["new"] for w in api["weekly"]["data"]) == cli["customers"]["new"]
        assert api["weekly"]["data"] == _weekly(truth, first, last)
        # Per branch: customers with sales there on 2+ days over customers with a sale there.
        for b in api["repeat"]["data"]:
            sales = truth.in_scope(first, last, b["branch"])
            days: dict[tuple, set] = defaultdict(set)
            for s in sales:
                days[s.who].add(s.day)
            assert (b["customers"], b["repeat_customers"]) == \
                (len(days), sum(1 for d in days.values() if len(d) >= 2))
    listing = client.get("/api/customers/list", params={"segment": "At Risk"})
    assert listing.status_code == 200 and listing.headers["content-type"].startswith("text/csv")
    assert "attachment" in listing.headers["content-disposition"]
    assert listing.text.splitlines()[0].startswith("customer_key,segment,r,f,m")
    bad = client.get("/api/customers/list", params={"segment": "Sleepers"})
    assert bad.status_code == 400 and "the segments are" in bad.json()["error"]


@pytest.mark.parametrize("args, message", [
    (["--list", "Sleepers"], "unknown segment 'Sleepers'; the segments are: Champions"),
    (["--out", "x.csv"], "--out names the target list's file"),
    (["--branch", "Atlantis"], "unknown branch 'Atlantis'"),
    (["--from", "2024-03-05", "--to", "2024-03-01"], "is after"),
])
def test_mistakes_are_one_line(loaded, args, message):
    result = run_cli("customers", "--warehouse", loaded, *args)
    assert result.code == 2 and message in result.stderr and "Traceback" not in result.stderr


def _day_file(folder: Path, day: int, people: list[str]) -> None:
    lines = [f"{day:02d}/03/2024 09:{n:02d},Leeds,{name},Large Latte - 2.45,2.45,CASH,"
             for n, name in enumerate(people)]
    (folder / f"leeds_{day:02d}-03-2024_09-00-00.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_sales_stay_exact_when_files_are_replaced(backend, tmp_path, postgres_databases):
    """A replaced version takes its sales with it: a customer's first sale moves to the
    next one, and a customer left with none is no customer any more."""
    url = new_warehouse(backend, tmp_path, postgres_databases)
    landing = tmp_path / "landing"
    landing.mkdir()

    def ingest() -> dict:
        result = run_cli("ingest", landing, "--warehouse", url)
        assert result.code == 0, result.stderr
        assert customer_mismatches(url) == [] and chain_pair_mismatches(url) == []
        first = dict(query(url, "SELECT customer_key, first_seen FROM dim_customer"))
        return run_cli("customers", "--warehouse", url, "--format", "json", "--from", "2024-03-04").json(), first

    _day_file(landing, 4, ["Ann Early", "Bob Both", "Cy Once"])
    _day_file(landing, 5, ["Ann Early", "Bob Both", "Di Later"])
    answer, first = ingest()
    assert answer["customers"] == {"distinct": 4, "new": 4, "returning": 0, "repeat": 2}
    assert sorted(first.values()) == [date(2024, 3, 4)] * 3 + [date(2024, 3, 5)]
    _day_file(landing, 4, ["Bob Both", "Eve New"])  # a new version of the 4th: Ann and Cy were not there
    answer, first = ingest()
    assert sorted(first.values()) == [date(2024, 3, 4)] * 2 + [date(2024, 3, 5)] * 2  # Ann: the 5th; Cy: gone
    assert answer["customers"] == {"distinct": 4, "new": 4, "returning": 0, "repeat": 1}
    _day_file(landing, 5, ["Di Later"])
    answer, first = ingest()
    assert len(first) == 3 and answer["customers"]["distinct"] == 3  # Ann has no sale left
    assert answer["cohorts"][0]["customers"] == 3


def test_the_grafana_marts_give_the_default_period_s_figures(loaded, tmp_path):
    cli = run_cli("customers", "--warehouse", loaded, "--format", "json").json()
    segments = {name: (customers, sales, Decimal(revenue)) for name, customers, sales, revenue in
                query(loaded, "SELECT segment, customers, sales, revenue FROM mart_customer_segments")}
    assert segments == {s["segment"]: (s["customers"], s["sales"], Decimal(str(s["revenue"])).quantize(Decimal("0.01")))
                        for s in cli["segments"] if s["customers"]}
    cohorts: dict[str, dict] = {}
    for week, after, size, active, retention in query(loaded, "SELECT * FROM mart_customer_cohorts"):
        cohort = cohorts.setdefault(week.isoformat(), {"customers": size, "retention": {}})
        cohort["retention"][after] = round(retention, 4)
        assert active == round(retention * size)
    assert {k["week"]: (k["customers"], {i: r for i, r in enumerate(k["retention"]) if r})
            for k in cli["cohorts"] if k["retention"]} == \
        {week: (c["customers"], c["retention"]) for week, c in cohorts.items()}
    out = tmp_path / "champions.csv"
    assert run_cli("customers", "--warehouse", loaded, "--list", "Champions", "--out", out).code == 0
    with out.open(newline="") as f:
        listed = {(int(r["customer_key"]), int(r["r"]), int(r["f"]), int(r["m"]), int(r["recency_days"]))
                  for r in csv.DictReader(f)}
    assert listed == set(query(loaded, "SELECT customer_key, r, f, m, recency_days FROM mart_customer_scores "
                                       "WHERE segment = 'Champions'"))


@pytest.mark.parametrize("first, last", [(START, LAST - timedelta(days=1)), (START + timedelta(days=2), LAST),
                                         (date(2024, 1, 10), date(2024, 1, 12)),
                                         (START - timedelta(days=3), LAST + timedelta(days=3))])
def test_weeks_and_cohorts_from_the_sales_equal_those_from_each_customers_weeks(chain, loaded, first, last,
                                                                                 monkeypatch):
    """A warehouse without the customer rollups (an Iceberg lake) counts weekly customers,
    cohorts and repeat customers from the sales: the same answers, for any period."""
    from cafe_etl.analytics import customers
    from cafe_etl.analytics.report import Filters
    from cafe_etl.warehouse import open_warehouse

    _, truth = chain
    want = _public(expected_answer(truth, first, last))
    with open_warehouse(loaded).reader() as reader:
        scope = customers.resolve(reader, Filters(first, last))
        kept = [customers.cohorts(reader, scope), customers.weekly(reader, scope),
                customers.repeat_by_branch(reader, scope)]
        monkeypatch.setattr(type(reader), "keeps_customer_rollups", False)
        from_sales = [customers.cohorts(reader, scope), customers.weekly(reader, scope),
                      customers.repeat_by_branch(reader, scope)]
    assert kept == from_sales and kept[0] == want["cohorts"] and kept[1] == _weekly(truth, first, last)


def test_the_whole_history_is_counted_from_each_customers_sales_to_date(chain, loaded, monkeypatch):
    """A period holding every sale reads one row per customer (their sales to date), never
    the sales; any other period, or one branch, groups the sales. Both give DESIGN's answer."""
    from cafe_etl.analytics import customers, report
    from cafe_etl.analytics.report import Filters
    from cafe_etl.warehouse import open_warehouse

    _, truth = chain
    grouped = []
    real = customers._per_customer
    monkeypatch.setattr(customers, "_per_customer", lambda *a, **k: grouped.append(1) or real(*a, **k))
    branch = truth.sales[0].branch
    with open_warehouse(loaded).reader() as reader:
        whole = customers.build(reader, Filters(START - timedelta(days=3), LAST))
        assert not grouped and report.whole_history(reader, customers.resolve(reader, Filters(START, LAST)))
        assert customers.rfm(reader, customers.resolve(reader, Filters(START, LAST)))["frequency"] == \
            whole["frequency"] and not grouped
        shorter = customers.build(reader, Filters(START, LAST - timedelta(days=1)))
        one_branch = customers.resolve(reader, Filters(START, LAST, (branch,)))
        assert grouped and not report.whole_history(reader, one_branch)
    assert json.loads(dumps(whole)) == _public(expected_answer(truth, START - timedelta(days=3), LAST))
    assert json.loads(dumps(shorter)) == _public(expected_answer(truth, START, LAST - timedelta(days=1)))
