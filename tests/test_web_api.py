"""The dashboard's JSON API, in process, on both backends: every endpoint against the
generator's truth, bad parameters, errors without traces, limits and the cache."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from tests.conftest import BACKENDS, by_day, new_warehouse, run_cli

from cafe_etl.config import Settings
from cafe_etl.web.app import create_app

BUSINESS = ["/api/overview/figures", "/api/overview/daily", "/api/what/products", "/api/what/sizes",
            "/api/what/flavours", "/api/what/mix", "/api/where/ranking", "/api/where/trend",
            "/api/where/best-sellers", "/api/when/heatmap", "/api/when/peak-hours", "/api/when/hours",
            "/api/customers/counts", "/api/customers/rfm", "/api/customers/cohorts", "/api/customers/weekly",
            "/api/customers/repeat", "/api/together/pairs", "/api/trends/movers", "/api/what/categories",
            "/api/what/case-variants", "/api/payments/split", "/api/payments/daily", "/api/payments/branches"]
# Answered, and checked against the commands, in test_trends (they need weeks of history).
TRENDS = ["/api/together/with", "/api/trends/anomalies", "/api/ops/suspect-days"]
OPERATIONS = ["/api/ops/files", "/api/ops/arrivals", "/api/ops/rejects", "/api/ops/reject-rows", "/api/ops/failed",
              "/api/ops/runs", "/api/ops/service", "/api/meta"]
BAD_FILE = "Nowhere_01-01-2024_09-00-00.csv"


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, generated, tmp_path_factory, postgres_databases):
    """A warehouse holding the generated chain (but one branch's last day, held back so it
    is late) and one file that is not a branch export; the app over it."""
    folder = tmp_path_factory.mktemp(f"web-{request.param}")
    landing = folder / "landing"
    shutil.copytree(generated, landing)
    days = by_day(landing)
    last_day = sorted(days)[-1]
    late = sorted(days[last_day])[0]
    late.rename(folder / late.name)
    (landing / BAD_FILE).write_text("a,b,c,d,e,f,g,h\n1,2,3,4,5,6,7,8\n")
    url = new_warehouse(request.param, folder, postgres_databases)
    result = run_cli("ingest", landing, "--warehouse", url)
    assert result.code == 1, result.stderr  # the bad file failed; the others loaded
    app = create_app(Settings(warehouse=url))
    with TestClient(app) as client:
        yield client, url, folder / late.name
    postgres_databases.drop(url)


def get(client, path, **params):
    response = client.get(path, params=params)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def test_every_endpoint_answers(site):
    client, _, _ = site
    for path in BUSINESS + OPERATIONS:
        body = get(client, path)
        assert body.get("data", body) not in (None, [], {}), path


def test_headline_figures_follow_the_facts(site, expected):
    client, url, late = site
    from tests.conftest import query

    tx, items, revenue = query(url, "SELECT count(*), sum(item_count), sum(total) FROM fact_sale")[0]
    meta = get(client, "/api/meta")
    period = {"from": meta["first_day"], "to": meta["last_day"]}
    figures = get(client, "/api/overview/figures", **period)["data"]["figures"]
    assert figures["transactions"]["value"] == tx
    assert figures["items"]["value"] == items
    assert Decimal(str(figures["revenue"]["value"])) == revenue
    assert Decimal(str(figures["average_basket_value"]["value"])) == (revenue / tx).quantize(Decimal("0.01"))
    # Held back one file of the last day: the warehouse holds the truth less exactly that file.
    assert tx < expected["report"]["totals"]["transactions"]
    assert figures["revenue"]["previous"] == 0 and figures["revenue"]["change_pct"] is None


def test_the_change_compares_with_the_previous_period_of_the_same_length(site):
    client, url, _ = site
    from tests.conftest import query

    days = [d for (d,) in query(url, "SELECT DISTINCT d.date FROM fact_sale f JOIN dim_date d "
                                     "ON d.date_key = f.date_key ORDER BY 1")]
    first, last = days[-2], days[-1]
    body = get(client, "/api/overview/figures", **{"from": first.isoformat(), "to": last.isoformat()})
    assert body["data"]["previous_period"] == {"from": (first - timedelta(days=2)).isoformat(),
                                               "to": (first - timedelta(days=1)).isoformat()}

    def revenue(a, b):
        return query(url, "SELECT sum(f.total) FROM fact_sale f JOIN dim_date d ON d.date_key = f.date_key "
                          "WHERE d.date BETWEEN ? AND ?", [a, b])[0][0]

    figures = body["data"]["figures"]["revenue"]
    now, before = revenue(first, last), revenue(first - timedelta(days=2), first - timedelta(days=1))
    assert Decimal(str(figures["value"])) == now and Decimal(str(figures["previous"])) == before
    assert figures["change_pct"] == round(float((now - before) / before) * 100, 1)


def test_daily_revenue_and_its_moving_average(site):
    client, url, _ = site
    from tests.conftest import query

    series = get(client, "/api/overview/daily")["data"]
    by_date = dict(query(url, "SELECT d.date, sum(f.total) FROM fact_sale f JOIN dim_date d "
                              "ON d.date_key = f.date_key GROUP BY d.date"))
    assert [Decimal(str(d["revenue"])) for d in series] == [by_date[date.fromisoformat(d["date"])] for d in series]
    first = series[0]
    assert Decimal(str(first["average_7d"])) == Decimal(str(first["revenue"]))  # nothing sold before
    window = [Decimal(str(d["revenue"])) for d in series[:3]]
    assert Decimal(str(series[2]["average_7d"])) == (sum(window) / 3).quantize(Decimal("0.01"))


def test_products_sizes_and_flavours_agree_with_the_report(site):
    client, url, _ = site
    meta = get(client, "/api/meta")
    period = {"from": meta["first_day"], "to": meta["last_day"]}
    report = run_cli("report", "--warehouse", url, "--format", "json").json()
    ranking = get(client, "/api/what/products", limit=100, **period)["data"]
    top = report["products"][0]
    label = " ".join(p for p in (top["size"], top["name"]) if p) + (f" - {top['flavour']}" if top["flavour"] else "")
    assert ranking["top_by_revenue"][0]["product"] == label
    assert ranking["top_by_revenue"][0]["revenue"] == top["revenue"]
    assert ranking["products"] == len(report["products"])
    assert ranking["bottom_by_quantity"][0]["quantity"] == min(p["quantity"] for p in report["products"])
    sizes = get(client, "/api/what/sizes", **period)["data"]
    assert sum(s["quantity"] for s in sizes) == report["totals"]["items"]
    flavours = get(client, "/api/what/flavours", **period)["data"]
    assert sum(f["quantity"] for f in flavours) == sum(p["quantity"] for p in report["products"] if p["flavour"])
    mix = get(client, "/api/what/mix", **period)["data"]
    assert sum(sum(b["quantities"]) for b in mix["branches"]) == report["totals"]["items"]
    assert set(mix["categories"]) == {c["category"] for c in report["categories"]}
    assert "Other" not in mix["categories"]  # every generated product has a category
    assert get(client, "/api/what/categories", **period)["data"] == report["categories"]
    variants = get(client, "/api/what/case-variants", **period)["data"]
    spelled = [{n["name"] for n in v["names"]} for v in variants]
    assert {"Hot Chocolate", "Hot chocolate"} in spelled
    for v in variants:
        for n in v["names"]:
            sold = [p for p in report["products"] if p["name"] == n["name"]]
            assert n["quantity"] == sum(p["quantity"] for p in sold)


def test_payments_agree_with_the_report_at_every_grain(site):
    client, url, _ = site
    meta = get(client, "/api/meta")
    period = {"from": meta["first_day"], "to": meta["last_day"]}
    report = run_cli("report", "--warehouse", url, "--format", "json", "--from", period["from"],
                     "--to", period["to"]).json()
    split = get(client, "/api/payments/split", **period)["data"]
    assert [(m["method"], m["transactions"], m["revenue"]) for m in split] == \
        [(p["method"], p["transactions"], p["revenue"]) for p in report["payments"]]
    assert sum(m["transactions_share_pct"] for m in split) == pytest.approx(100, abs=0.2)
    for grain in ("day", "week", "month"):
        over = get(client, "/api/payments/daily", grain=grain, **period)["data"]
        for m in over["methods"]:
            want = next(p for p in report["payments"] if p["method"] == m["method"])
            assert sum(m["transactions"]) == want["transactions"]
            assert round(sum(Decimal(str(v)) for v in m["revenue"]), 2) == Decimal(str(want["revenue"]))
        revenue = get(client, "/api/overview/daily", grain=grain, **period)["data"]
        assert round(sum(Decimal(str(d["revenue"])) for d in revenue), 2) == Decimal(str(report["totals"]["revenue"]))
        assert sum(d["transactions"] for d in revenue) == report["totals"]["transactions"]
    weeks = [d["date"] for d in get(client, "/api/overview/daily", grain="week", **period)["data"]]
    assert all(date.fromisoformat(d).weekday() == 0 for d in weeks)
    branches = get(client, "/api/payments/branches", **period)["data"]
    assert {b["branch"]: b["transactions"] for b in branches} == \
        {b["branch"]: b["transactions"] for b in report["branches"]}
    assert client.get("/api/overview/daily", params={"grain": "year"}).status_code == 400


def test_every_chart_s_figures_download_as_csv(site):
    import csv
    import io

    client, _, _ = site
    for path in BUSINESS + ["/api/ops/files", "/api/ops/rejects", "/api/ops/runs"]:
        response = client.get(path, params={"format": "csv"})
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert rows, path
    ranking = get(client, "/api/where/ranking")["data"]
    rows = list(csv.DictReader(io.StringIO(client.get("/api/where/ranking", params={"format": "csv"}).text)))
    assert [(r["branch"], r["revenue"]) for r in rows] == [(b["branch"], f"{b['revenue']:.2f}") for b in ranking]
    trend = get(client, "/api/where/trend", grain="week")["data"]
    rows = list(csv.DictReader(io.StringIO(client.get("/api/where/trend", params={"format": "csv",
                                                                               "grain": "week"}).text)))
    assert [r[f"revenue.{trend['dates'][0]}"] for r in rows] == [f"{s['revenue'][0]:.2f}" for s in trend["series"]]
    assert client.get("/api/where/ranking", params={"format": "xml"}).status_code == 400


def test_branches_rank_trend_and_best_sellers(site):
    client, url, _ = site
    meta = get(client, "/api/meta")
    period = {"from": meta["first_day"], "to": meta["last_day"]}
    report = run_cli("report", "--warehouse", url, "--format", "json").json()
    ranking = get(client, "/api/where/ranking", **period)["data"]
    assert [(b["branch"], b["revenue"]) for b in ranking] == [(b["branch"], b["revenue"]) for b in report["branches"]]
    assert [b["rank"] for b in ranking] == list(range(1, len(ranking) + 1))
    trend = get(client, "/api/where/trend", top=3, **period)["data"]
    assert [s["branch"] for s in trend["series"]] == [b["branch"] for b in ranking[:3]]
    assert round(sum(trend["series"][0]["revenue"]), 2) == ranking[0]["revenue"]
    best = get(client, "/api/where/best-sellers", **period)["data"]
    assert sorted(b["branch"] for b in best) == sorted(meta["branches"])
    one = ranking[0]["branch"]
    mine = get(client, "/api/what/products", branch=one, **period)["data"]["top_by_quantity"][0]
    assert next(b for b in best if b["branch"] == one)["product"] == mine["product"]


def test_when_heatmap_hours_and_peaks(site):
    client, url, _ = site
    meta = get(client, "/api/meta")
    period = {"from": meta["first_day"], "to": meta["last_day"]}
    report = run_cli("report", "--warehouse", url, "--format", "json").json()
    heat = get(client, "/api/when/heatmap", **period)["data"]
    assert sum(c["transactions"] for c in heat["cells"]) == report["totals"]["transactions"]
    assert {c["weekday"] for c in heat["cells"]} <= set(range(1, 8))
    hours = get(client, "/api/when/hours", **period)["data"]
    assert [(h["hour"], h["transactions"], h["revenue"]) for h in hours] == \
        [(h["hour"], h["transactions"], h["revenue"]) for h in report["hours"]]
    peaks = get(client, "/api/when/peak-hours", **period)["data"]
    assert len(peaks) == len(meta["branches"]) and all(0 < p["share_pct"] <= 100 for p in peaks)


def test_customers_new_and_returning(site):
    from tests.conftest import query

    client, url, _ = site
    meta = get(client, "/api/meta")
    period = {"from": meta["first_day"], "to": meta["last_day"]}
    report = run_cli("report", "--warehouse", url, "--format", "json").json()
    assert get(client, "/api/customers/counts", **period)["data"] == report["customers"]
    weekly = get(client, "/api/customers/weekly", **period)["data"]
    assert sum(w["new"] for w in weekly) == report["customers"]["new"]  # the whole history: all are new once
    assert weekly[0]["new"] == weekly[0]["customers"] > 0  # everybody is new in the first week
    assert weekly[0]["from"] == period["from"] and weekly[-1]["to"] == period["to"]
    assert all(w["customers"] == w["new"] + w["returning"] for w in weekly)
    repeat = get(client, "/api/customers/repeat", **period)["data"]
    per_branch = query(url, """SELECT b.name, count(DISTINCT f.customer_key),
                                      count(DISTINCT CASE WHEN f.date_key > first.first_key THEN f.customer_key END)
                               FROM fact_sale f JOIN dim_branch b ON b.branch_key = f.branch_key
                               JOIN (SELECT branch_key, customer_key, min(date_key) AS first_key FROM fact_sale
                                     GROUP BY branch_key, customer_key) first
                                 ON first.branch_key = f.branch_key AND first.customer_key = f.customer_key
                               WHERE f.customer_key IS NOT NULL GROUP BY b.name""")
    assert {r["branch"]: (r["customers"], r["repeat_customers"]) for r in repeat} == \
        {name: (total, again) for name, total, again in per_branch}
    assert all(0 <= r["repeat_rate_pct"] <= 100 for r in repeat)


def test_a_branch_filter_narrows_every_chart(site):
    client, _, _ = site
    ranking = get(client, "/api/where/ranking")["data"]
    branch = ranking[-1]["branch"]
    figures = get(client, "/api/overview/figures", branch=branch.upper())["data"]["figures"]
    assert figures["revenue"]["value"] == ranking[-1]["revenue"]
    assert get(client, "/api/where/ranking", branch=branch)["data"][0]["branch"] == branch
    heat = get(client, "/api/when/heatmap", branch=branch)["data"]
    assert sum(c["transactions"] for c in heat["cells"]) == ranking[-1]["transactions"]


def test_several_branches_at_once(site):
    client, url, _ = site
    ranking = get(client, "/api/where/ranking")["data"]
    two = [ranking[0]["branch"], ranking[-1]["branch"]]
    body = client.get("/api/overview/figures", params=[("branch", two[0]), ("branch", two[1].upper())]).json()
    assert body["branch"] == [two[0], two[1].upper()]
    revenue = body["data"]["figures"]["revenue"]["value"]
    assert revenue == pytest.approx(ranking[0]["revenue"] + ranking[-1]["revenue"], abs=0.005)
    chosen = client.get("/api/where/ranking", params=[("branch", b) for b in two]).json()["data"]
    assert [b["branch"] for b in chosen] == two
    repeat = client.get("/api/customers/repeat", params=[("branch", b) for b in two]).json()["data"]
    assert {r["branch"] for r in repeat} <= set(two)
    assert client.get("/api/customers/cohorts", params=[("branch", b) for b in two]).json()["data"] == []
    page = client.get("/where", params=[("branch", b) for b in two])
    assert page.status_code == 200
    assert all(f'<option value="{b}" selected>' in page.text for b in two)
    bad = client.get("/api/where/ranking", params=[("branch", two[0]), ("branch", "Atlantis")])
    assert bad.status_code == 400 and "unknown branch 'Atlantis'" in bad.json()["error"]


@pytest.mark.parametrize("path, params, message", [
    ("/api/overview/figures", {"from": "2024-13-01"}, "from must be a date written YYYY-MM-DD"),
    ("/api/overview/figures", {"to": "yesterday"}, "to must be a date"),
    ("/api/overview/figures", {"from": "2024-03-05", "to": "2024-03-01"}, "is after to"),
    ("/api/overview/figures", {"from": "2000-01-01", "to": "2024-03-01"}, "longer than"),
    ("/api/where/ranking", {"branch": "Atlantis"}, "unknown branch 'Atlantis'"),
    ("/api/what/products", {"limit": "0"}, "limit"),
    ("/api/what/products", {"limit": "ten"}, "limit"),
    ("/api/where/trend", {"top": "999"}, "top"),
    ("/api/ops/reject-rows", {"reason": "x'; DROP TABLE etl_file; --"}, "reason"),
    ("/api/ops/reject-rows", {"offset": "-1"}, "offset"),
])
def test_bad_parameters_are_400_with_a_clear_message(site, path, params, message):
    client, _, _ = site
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert "Traceback" not in response.text and "SELECT" not in response.text


def test_operations_figures(site, expected):
    client, url, late = site
    from tests.conftest import query

    statuses = dict(query(url, "SELECT status, count(*) FROM etl_file GROUP BY status"))
    files = get(client, "/api/ops/files", **{"from": "2000-01-01", "to": "2002-12-31"})["data"]
    assert files == []
    files = get(client, "/api/ops/files")["data"]
    assert sum(d.get("loaded", 0) for d in files) == statuses["loaded"]
    assert statuses["failed"] == 1 and not any("failed" in d for d in files)
    # A file that is not a branch export has no business day: it counts on the day it was processed.
    today = date.today().isoformat()
    assert get(client, "/api/ops/files", **{"from": today, "to": today})["data"] == [{"date": today, "failed": 1}]
    failed = get(client, "/api/ops/failed")["data"]
    assert failed[0]["location"].endswith(BAD_FILE) and failed[0]["error"]
    arrivals = get(client, "/api/ops/arrivals")["data"]
    assert len(arrivals["late"]) == 1 and arrivals["missing"] == []
    assert late.name.lower().startswith(arrivals["late"][0].lower().replace(" ", "_") + "_")
    assert arrivals["delivered"] == arrivals["branches"] - 1
    rejects = get(client, "/api/ops/rejects")["data"]
    in_quarantine = dict(query(url, "SELECT reason_code, count(*) FROM etl_reject GROUP BY reason_code"))
    assert rejects["by_reason"] == in_quarantine
    assert sum(sum(d["reasons"].values()) for d in rejects["days"]) == sum(in_quarantine.values())
    reason = sorted(in_quarantine)[0]
    rows = get(client, "/api/ops/reject-rows", reason=reason, limit=500)
    assert rows["total"] == in_quarantine[reason] and {r["reason"] for r in rows["data"]} == {reason}
    runs = get(client, "/api/ops/runs")["data"]
    assert runs[-1]["rows_loaded"] == query(url, "SELECT count(*) FROM fact_sale")[0][0]
    assert runs[-1]["files_failed"] == 1 and runs[-1]["rows_per_second"] > 0
    service = get(client, "/api/ops/service")["data"]
    assert service["files"] == statuses and service["last_success"] and service["uptime_seconds"] >= 0


def test_quarantined_rows_shown_carry_no_personal_data(site, generated):
    client, _, _ = site
    import csv

    names, cards = set(), set()
    for path in generated.glob("*.csv"):
        with path.open(newline="") as f:
            for row in csv.reader(f):
                if len(row) == 7:
                    names.add(row[2])
                    cards.add(row[6])
    shown = client.get("/api/ops/reject-rows", params={"limit": 500}).text
    assert not [n for n in names if n and f'"{n}' in shown]
    assert not [c for c in cards if c and len(c) >= 12 and c in shown]


def test_health_readiness_and_metrics(site):
    client, url, _ = site
    from tests.conftest import query

    assert get(client, "/healthz")["status"] == "ok"
    assert get(client, "/readyz")["status"] == "ready"
    text = client.get("/metrics").text
    statuses = dict(query(url, "SELECT status, count(*) FROM etl_file GROUP BY status"))
    rows = query(url, "SELECT count(*) FROM fact_sale")[0][0]
    reasons = dict(query(url, "SELECT reason_code, count(*) FROM etl_reject GROUP BY reason_code"))
    metrics = _parse_metrics(text)
    assert metrics['cafe_etl_files_processed_total{outcome="loaded"}'] == statuses["loaded"]
    assert metrics['cafe_etl_files_processed_total{outcome="failed"}'] == 1
    assert metrics["cafe_etl_rows_loaded_total"] == rows
    for reason, count in reasons.items():
        assert metrics[f'cafe_etl_quarantined_rows{{reason="{reason}"}}'] == count
    assert metrics["cafe_etl_ingest_duration_seconds_count"] == 1
    assert metrics["cafe_etl_warehouse_up"] == 1
    assert metrics["cafe_etl_files_pending"] == 0
    assert metrics["cafe_etl_last_success_timestamp_seconds"] > 1.6e9
    assert "process_start_time_seconds" in metrics and metrics["cafe_etl_uptime_seconds"] >= 0
    assert len([k for k in metrics if k.startswith("cafe_etl_branch_last_business_day_timestamp_seconds")]) == 9


def _parse_metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_openapi_documents_every_endpoint(site):
    client, _, _ = site
    spec = get(client, "/openapi.json")
    for path in BUSINESS + OPERATIONS + TRENDS:
        operation = spec["paths"][path]["get"]
        assert operation["summary"] and operation.get("description"), path
    assert "from" in [p["name"] for p in spec["paths"]["/api/overview/figures"]["get"]["parameters"]]
    assert client.get("/docs").status_code == 200


def test_pages_render_with_the_filters_resolved(site):
    client, _, _ = site
    meta = get(client, "/api/meta")
    for path in ("/", "/what", "/where", "/when", "/payments", "/customers", "/trends", "/operations"):
        page = client.get(path)
        assert page.status_code == 200 and 'data-api="/api/' in page.text, path
        assert f'value="{meta["last_day"]}"' in page.text
    bad = client.get("/where", params={"branch": "Atlantis"})
    assert bad.status_code == 400 and bad.text.count("unknown branch") == 1
    assert "None" not in bad.text and "data-api=" not in bad.text
    chosen = client.get("/where", params={"branch": meta["branches"][0]})
    assert f'<option value="{meta["branches"][0]}" selected>' in chosen.text


def test_unexpected_errors_show_no_trace_or_sql(site, monkeypatch):
    client, _, _ = site
    from cafe_etl.analytics import business

    def broken(reader, scope):
        reader.query("SELECT no_such_column FROM fact_sale")

    monkeypatch.setattr(business, "sizes", broken)
    response = client.get("/api/what/sizes", params={"from": "2024-01-01", "to": "2024-01-02", "branch": ""})
    assert response.status_code == 503
    assert "no_such_column" not in response.text and "Traceback" not in response.text

    def crash(reader, scope):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(business, "flavours", crash)
    client = TestClient(client.app, raise_server_exceptions=False)
    response = client.get("/api/what/flavours", params={"to": "2030-01-01"})
    assert response.status_code == 500 and response.json() == {
        "error": "internal error: the service log has the details"}


def test_no_warehouse_yet_is_503_not_a_crash(tmp_path):
    app = create_app(Settings(warehouse=str(tmp_path / "none.duckdb")))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json() == {"status": "not ready"}  # nothing about the warehouse
        assert client.get("/api/overview/figures").status_code == 503
        page = client.get("/")
        assert page.status_code == 503 and "no warehouse" in page.text
        assert "cafe_etl_warehouse_up 0.0" in client.get("/metrics").text
