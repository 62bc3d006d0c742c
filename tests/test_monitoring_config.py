"""Grafana and Prometheus files under deploy/: every SQL panel runs on a real PostgreSQL
warehouse (Grafana's macros expanded as Grafana does) and returns rows; every metric an
alert or panel uses is one the service exposes."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from tests.conftest import by_day, query, require_postgres, run_cli

from cafe_etl.config import Settings
from cafe_etl.web.app import create_app

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
FROM = datetime(2024, 1, 1, tzinfo=UTC)
TO = datetime.now(UTC) + timedelta(days=1)


def targets(kind: str):
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["uid"] == kind:
                    yield path.stem, panel["title"], target


def expand(sql: str, branches: list[str]) -> str:
    """Grafana's PostgreSQL macros and the ``${branch:sqlstring}`` variable, as Grafana expands them."""
    stamp = "'{:%Y-%m-%dT%H:%M:%SZ}'"
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)",
                 lambda m: f"{m.group(1)} BETWEEN {stamp.format(FROM)} AND {stamp.format(TO)}", sql)
    sql = sql.replace("$__timeFrom()", stamp.format(FROM)).replace("$__timeTo()", stamp.format(TO))
    quoted = ",".join("'" + b.replace("'", "''") + "'" for b in branches)
    sql = sql.replace("${branch:sqlstring}", quoted)
    assert "$" not in sql, f"an unexpanded macro or variable in: {sql}"
    return sql


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, postgres_databases):
    require_postgres()
    landing = tmp_path_factory.mktemp("grafana") / "landing"
    # Three weeks and a day from a Monday: weeks have ended, so the cohort panel has rows,
    # and the last week has two whole weeks before it for the week-on-weeks panels.
    assert run_cli("generate", landing, "--branches", 9, "--days", 22, "--seed", 11, "--bad-rate", 0.04,
                   "--plant-trends").code == 0
    (landing / "Nowhere_01-03-2024_09-00-00.csv").write_text("a,b,c,d,e,f,g,h\n")  # a failed file, for its panel
    last_day = by_day(landing)[max(by_day(landing))]
    last_day[0].unlink()  # a branch late with its newest file, for the missing-files panel
    url = postgres_databases.create()
    assert run_cli("ingest", landing, "--warehouse", url).code == 1
    yield url
    postgres_databases.drop(url)


@pytest.mark.parametrize("dashboard, title, target", list(targets("cafe-etl-warehouse")),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_sql_panel_returns_rows_from_the_warehouse(warehouse, dashboard, title, target):
    branches = [name for (name,) in query(warehouse, "SELECT name FROM dim_branch ORDER BY name")]
    rows = query(warehouse, expand(target["rawSql"], branches))
    assert rows, f"{dashboard}: {title} returned nothing"
    assert any(value is not None for value in rows[0])
    if target["format"] == "time_series":
        assert isinstance(rows[0][0], datetime | type(FROM.date())), f"{title}: the first column must be the time"


def test_the_branch_variable_query_lists_branches(warehouse):
    business = json.loads((DEPLOY / "grafana" / "dashboards" / "business.json").read_text())
    variable = next(v for v in business["templating"]["list"] if v["name"] == "branch")
    assert len(query(warehouse, variable["query"])) == 9


def test_dashboards_use_only_provisioned_data_sources():
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/cafe-etl.yaml").read_text())
    uids = {source["uid"] for source in provisioned["datasources"]}
    used = {target["datasource"]["uid"] for path in DASHBOARDS
            for panel in json.loads(path.read_text())["panels"] for target in panel["targets"]}
    assert used == uids
    assert "password:" in (DEPLOY / "grafana/provisioning/datasources/cafe-etl.yaml").read_text()
    assert "${CAFE_ETL_PG_PASSWORD}" in (DEPLOY / "grafana/provisioning/datasources/cafe-etl.yaml").read_text()


def _exposed_metric_names(tmp_path, generated) -> set[str]:
    warehouse = tmp_path / "w.duckdb"
    assert run_cli("ingest", generated, "--warehouse", warehouse).code == 0
    with TestClient(create_app(Settings(warehouse=str(warehouse)))) as client:
        text = client.get("/metrics").text
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_alerts_and_panels_use_metrics_the_service_exposes(tmp_path, generated):
    exposed = _exposed_metric_names(tmp_path, generated)
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    expressions += [target["expr"] for _, _, target in targets("cafe-etl-prometheus")]
    used = {name for expr in expressions for name in re.findall(r"\b(cafe_etl_\w+)", expr)}
    assert used and used <= exposed, used - exposed
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"CafeEtlBranchFileMissing", "CafeEtlFileErrorRate", "CafeEtlIngestStalled"} <= names
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["rule_files"] == ["alerts.yml"]
    assert scrape["scrape_configs"][0]["metrics_path"] == "/metrics"


def _panel_sql(title_start: str) -> str:
    business = json.loads((DEPLOY / "grafana" / "dashboards" / "business.json").read_text())
    panel = next(p for p in business["panels"] if p["title"].startswith(title_start))
    return panel["targets"][0]["rawSql"]


def test_the_pairs_and_week_panels_show_the_commands_figures(warehouse):
    branches = [name for (name,) in query(warehouse, "SELECT name FROM dim_branch ORDER BY name")]
    first, last = query(warehouse, "SELECT min(date), max(date) FROM mart_daily_branch_sales")[0]
    label = lambda p: " ".join(x for x in (p["size"], p["name"]) if x) + (f" - {p['flavour']}" if p["flavour"] else "")  # noqa: E731
    together = run_cli("together", "--warehouse", warehouse, "--from", first, "--to", last, "--format", "json").json()
    want = {(label(p["a"]), label(p["b"])): (p["baskets"], p["lift"]) for p in together["pairs"]}
    rows = query(warehouse, expand(_panel_sql("Bought together"), branches))
    assert rows
    for a, b, baskets, _, _, lift in rows:
        key = (a, b) if (a, b) in want else (b, a)
        assert want[key] == (baskets, float(lift))
    trends = run_cli("trends", "--warehouse", warehouse, "--format", "json").json()
    week = {row[0]: row[1:] for row in query(warehouse, expand(_panel_sql("Branches: the last 7"), branches))}
    movers = [m for m in trends["movers"] if m["kind"] == "branch"]
    assert movers
    for m in movers:
        assert (week[m["branch"]][0], float(week[m["branch"]][1]), float(week[m["branch"]][2])) == \
            (m["current"], m["baseline"], m["change_pct"])
