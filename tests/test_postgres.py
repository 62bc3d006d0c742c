"""PostgreSQL: the same results as DuckDB, several loaders at once, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from tests.conftest import (
    CLI,
    SAMPLES,
    chain_pair_mismatches,
    copy_samples,
    customer_mismatches,
    query,
    require_postgres,
    run_cli,
)

pytestmark = pytest.mark.usefixtures("postgres_databases")


@pytest.fixture
def pg_url(postgres_databases):
    url = postgres_databases.create()
    yield url
    postgres_databases.drop(url)


def _report(url, *args) -> str:
    result = run_cli("report", "--warehouse", url, "--format", "json", *args)
    assert result.code == 0, result.stderr
    return result.stdout


def _shape(url: str) -> dict[str, list[str]]:
    rows = query(url, """SELECT table_name, column_name FROM information_schema.columns
                         WHERE table_schema IN ('main', 'public') ORDER BY table_name, ordinal_position""")
    shape: dict[str, list[str]] = {}
    for table, column in rows:
        shape.setdefault(table, []).append(column)
    return shape


def test_both_dialects_build_the_same_warehouse_from_one_schema(tmp_path, pg_url):
    """One DDL file for both backends: the same tables, views and columns in the same
    order, and the same dimension rows (date names come from the engine for both)."""
    landing = tmp_path / "landing"
    copy_samples(landing)
    duck = f"duckdb:///{tmp_path / 'w.duckdb'}"
    for url in (duck, pg_url):
        assert run_cli("ingest", landing, "--warehouse", url).code in (0, 1)
    assert _shape(duck) == _shape(pg_url)
    assert len(_shape(duck)) >= 15
    for table, order in (("dim_date", "date_key"), ("dim_time", "time_key"), ("dim_payment_method", "payment_key"),
                         ("dim_branch", "branch_key"), ("dim_product", "product_key")):
        both = [query(url, f"SELECT * FROM {table} ORDER BY {order}") for url in (duck, pg_url)]
        assert both[0] == both[1], table
        assert both[0], table
    (weekday,) = query(pg_url, "SELECT weekday_name FROM dim_date ORDER BY date_key LIMIT 1")[0]
    assert weekday in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def test_both_warehouses_give_the_same_report(generated, expected, tmp_path, pg_url):
    landing = tmp_path / "landing"
    shutil.copytree(generated, landing)
    copy_samples(landing / "samples")
    duck = f"duckdb:///{tmp_path / 'w.duckdb'}"
    for url in (duck, pg_url):
        result = run_cli("ingest", landing, "--warehouse", url)
        assert result.code == 0, result.stderr
    later = expected["later_half"]["period"]
    for args in ((), ("--from", later["from"], "--to", later["to"]), ("--branch", "Leeds")):
        assert _report(duck, *args) == _report(pg_url, *args)
    assert json.loads(_report(pg_url))["quality"]["rows_rejected"] == (
        expected["report"]["quality"]["rows_rejected"] + 22)  # the dirty sample's


def test_four_loaders_at_once_load_every_file_exactly_once(generated, expected, tmp_path, pg_url):
    landing = tmp_path / "landing"
    shutil.copytree(generated, landing)
    env = {"CAFE_ETL_BATCH_BYTES": "60000"}  # many small batches: many chances to collide
    procs = [subprocess.Popen([*CLI, "ingest", str(landing), "--warehouse", pg_url, "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **env}) for _ in range(4)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, _, err in results:
        assert code == 0, err
    summaries = [json.loads(out) for _, out, _ in results]
    loaded = [f["location"] for s in summaries for f in s["file_results"] if f["outcome"] == "loaded"]
    assert sorted(loaded) == sorted(set(loaded)) and len(loaded) == expected["files"]
    assert json.loads(_report(pg_url)) == expected["report"]
    duplicates = query(pg_url, """
        SELECT (SELECT count(*) FROM (SELECT file_id, source_row FROM fact_sale GROUP BY 1, 2 HAVING count(*) > 1) d),
               (SELECT count(*) - count(DISTINCT customer_key) FROM dim_customer),
               (SELECT count(*) - count(DISTINCT product_key) FROM dim_product),
               (SELECT count(*) FROM etl_file WHERE status = 'loading'),
               (SELECT count(*) FROM etl_file WHERE status = 'loaded')""")[0]
    assert duplicates == (0, 0, 0, 0, expected["files"])
    assert customer_mismatches(pg_url) == []  # each customer's first sale, as the facts hold it
    assert chain_pair_mismatches(pg_url) == []  # the chain's pairs per day, changed by four loaders at once
    assert query(pg_url, "SELECT count(*) FROM agg_pair_date")[0][0] > 100


def test_unreachable_server_is_one_line(tmp_path):
    require_postgres()
    result = run_cli("report", "--warehouse", "postgresql://postgres@127.0.0.1:1/nowhere")
    assert result.code == 3 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot connect to the warehouse postgresql://postgres@127.0.0.1:1/nowhere")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_password_never_shows(tmp_path, pg_url):
    secret_url = pg_url.replace("postgres@", "postgres:not-the-real-one@")
    result = run_cli("ingest", tmp_path, "--warehouse", secret_url, "--json")
    assert result.code == 0, result.stderr  # trust authentication ignores the password
    assert "not-the-real-one" not in result.stdout + result.stderr
    assert result.json()["warehouse"] == pg_url


def test_connection_settings_from_pg_variables(pg_url):
    database = pg_url.rsplit("/", 1)[1]
    result = run_cli("ingest", SAMPLES / "canonical", "--warehouse", f"postgresql:///{database}",
                     env={"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "postgres"})
    assert result.code == 0, result.stderr
    assert query(pg_url, "SELECT count(*) FROM etl_file WHERE status = 'loaded'") == [(7,)]
