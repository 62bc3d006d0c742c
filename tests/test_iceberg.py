"""The Apache Iceberg warehouse (DESIGN §12): the same answers as the DuckDB warehouse
from the same files, tables that any Iceberg reader sees as cafe-etl reports them (read
here through pyiceberg alone), a replaced version leaving in the commit that adds its
replacement, and a second run loading nothing.

They need pyiceberg (``pip install -e '.[iceberg]'``); without it they skip, except on CI."""

from __future__ import annotations

import json
import os
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from tests.conftest import SAMPLES, query, run_cli


def _require_pyiceberg() -> None:
    try:
        import pyiceberg  # noqa: F401
    except ImportError:
        problem = "pyiceberg is not installed (pip install -e '.[iceberg]')"
        if os.environ.get("CI"):
            pytest.fail(f"Iceberg tests cannot run on CI: {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="module", autouse=True)
def _pyiceberg():
    _require_pyiceberg()


def _lake(folder: Path) -> str:
    return f"iceberg:///{folder}"  # an absolute folder: iceberg:////tmp/…


@pytest.fixture(scope="module")
def loaded(generated, tmp_path_factory):
    """The generated chain and the real samples, loaded into an Iceberg warehouse and,
    for comparison, into a DuckDB one."""
    folder = tmp_path_factory.mktemp("iceberg")
    landing = folder / "landing"
    shutil.copytree(generated, landing)
    shutil.copytree(SAMPLES, landing / "samples")
    lake, duck = _lake(folder / "lake"), f"duckdb:///{folder / 'warehouse.duckdb'}"
    for url in (lake, duck):
        result = run_cli("ingest", landing, "--warehouse", url)
        assert result.code == 0, result.stderr
    return landing, lake, duck, folder / "lake"


def _answer(url: str, *args: str):
    result = run_cli(*args, "--warehouse", url)
    assert result.code == 0, result.stderr
    return result.json()


@pytest.mark.parametrize("command", [
    ("report", "--from", "2000-01-01", "--format", "json"),
    ("report", "--format", "json", "--branch", "Leeds"),
    ("customers", "--from", "2000-01-01", "--format", "json"),
    ("together", "--from", "2000-01-01", "--min-baskets", "5", "--format", "json"),
    ("trends", "--format", "json"),
    ("rejects", "--format", "json", "--limit", "1000"),
    ("categories", "--format", "json"),
])
def test_every_command_answers_as_on_duckdb(loaded, command):
    _, lake, duck, _ = loaded
    assert _answer(lake, *command) == _answer(duck, *command)


def test_status_counts_the_same_files(loaded):
    _, lake, duck, _ = loaded
    answers = [_answer(url, "status", "--json") for url in (lake, duck)]
    for answer in answers:
        for moving in ("warehouse", "last_run", "last_successful_load"):
            answer.pop(moving, None)
    assert answers[0] == answers[1]


def test_any_iceberg_reader_sees_what_cafe_etl_reports(loaded):
    """Read with pyiceberg alone (no cafe-etl code): the catalog, the namespace, every
    table, and figures equal to the report's."""
    from pyiceberg.catalog.sql import SqlCatalog

    _, lake, _, folder = loaded
    catalog = SqlCatalog("cafe_etl", uri=f"sqlite:///{folder / 'catalog.db'}", warehouse=f"file://{folder}")
    tables = {name for _, name in catalog.list_tables("cafe_etl")}
    assert {"fact_sale", "fact_sale_item", "dim_customer", "dim_product", "agg_pair_day", "etl_reject"} <= tables
    sales = catalog.load_table("cafe_etl.fact_sale")
    assert [f.name for f in sales.spec().fields] == ["date_key"]  # a number, not free text
    facts = sales.scan().to_arrow()
    report = _answer(lake, "report", "--from", "2000-01-01", "--format", "json")
    assert facts.num_rows == report["totals"]["transactions"]
    assert sum(facts["total"].to_pylist(), Decimal(0)) == Decimal(str(report["totals"]["revenue"]))
    items = catalog.load_table("cafe_etl.fact_sale_item").scan().to_arrow()
    assert items.num_rows == report["totals"]["items"]
    customers = catalog.load_table("cafe_etl.dim_customer").scan().to_arrow()
    assert customers.num_rows == report["customers"]["distinct"]
    assert len(set(customers["customer_key"].to_pylist())) == customers.num_rows
    rejects = catalog.load_table("cafe_etl.etl_reject").scan().to_arrow()
    assert rejects.num_rows == report["quality"]["rows_rejected"]
    # The numbers the SQL warehouses hold, row for row: the same facts by file and day.
    assert query(lake, "SELECT count(*), sum(total) FROM fact_sale") == [(facts.num_rows, sum(
        facts["total"].to_pylist(), Decimal(0)))]


def test_a_replaced_version_leaves_in_the_commit_that_adds_its_replacement(tmp_path):
    from cafe_etl.warehouse.iceberg import IcebergWarehouse

    landing = tmp_path / "landing"
    shutil.copytree(SAMPLES / "canonical", landing)
    lake, duck = _lake(tmp_path / "lake"), f"duckdb:///{tmp_path / 'w.duckdb'}"
    for url in (lake, duck):
        assert run_cli("ingest", landing, "--warehouse", url).code == 0
    catalog = IcebergWarehouse(lake).catalog()
    commits_before = len(catalog.load_table("cafe_etl.fact_sale").metadata.metadata_log)

    changed = landing / "leeds_01-01-2020_09-00-00.csv"
    lines = changed.read_text().splitlines()
    changed.write_text("\n".join(lines[:-5]) + "\n")  # the till's export again, five sales shorter
    for url in (lake, duck):
        result = run_cli("ingest", landing, "--warehouse", url, "--json")
        assert result.code == 0, result.stderr
        assert result.json()["files"]["reloaded"] == 1 and result.json()["files"]["loaded"] == 0

    sales = catalog.load_table("cafe_etl.fact_sale")
    assert len(sales.metadata.metadata_log) == commits_before + 1  # one commit: the old rows out, the new in
    report = ("report", "--from", "2000-01-01", "--format", "json")
    assert _answer(lake, *report) == _answer(duck, *report)
    assert _answer(lake, *report)["totals"]["transactions"] == query(duck, "SELECT count(*) FROM fact_sale")[0][0]
    assert query(lake, "SELECT count(*) FROM dim_customer") == query(duck, "SELECT count(*) FROM dim_customer")
    assert query(lake, "SELECT customer_key, first_seen, first_branch_key FROM dim_customer ORDER BY 1") == query(
        duck, "SELECT customer_key, first_seen, first_branch_key FROM dim_customer ORDER BY 1")

    # Nothing new: nothing is written, to the ledger's runs aside.
    result = run_cli("ingest", landing, "--warehouse", lake, "--json")
    assert result.json()["files"]["unchanged"] == result.json()["files"]["total"] == 7
    assert len(catalog.load_table("cafe_etl.fact_sale").metadata.metadata_log) == commits_before + 1


def test_the_dashboard_api_and_metrics_answer_from_iceberg(loaded):
    from fastapi.testclient import TestClient

    from cafe_etl.config import Settings
    from cafe_etl.web.app import create_app

    _, lake, duck, _ = loaded
    answers = {}
    for url in (lake, duck):
        with TestClient(create_app(Settings(warehouse=url))) as client:
            answers[url] = {path: client.get(path, params={"from": "2023-01-01", **extra}).json()
                            for path, extra in (("/api/overview/figures", {}), ("/api/what/products", {}),
                                                ("/api/customers/rfm", {}), ("/api/ops/rejects", {}),
                                                ("/api/together/pairs", {"min_baskets": 1}))}
            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            assert "cafe_etl_files" in metrics.text
    assert json.dumps(answers[lake], sort_keys=True) == json.dumps(answers[duck], sort_keys=True)
    assert not [path for path, answer in answers[lake].items() if "error" in answer]
    assert answers[lake]["/api/together/pairs"]["data"]["pairs"]  # the lake's per-file pairs, added up


def test_a_wrong_iceberg_url_is_one_clear_line(tmp_path):
    result = run_cli("report", "--warehouse", "iceberg+postgresql://postgres@127.0.0.1/test")
    assert result.code == 2 and "warehouse=s3://" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("report", "--warehouse", _lake(tmp_path / "nothing-here"))
    assert result.code == 3 and "ingest" in result.stderr and "Traceback" not in result.stderr


def test_a_lake_in_s3_with_its_catalog_and_ledger_in_postgresql(loaded, s3_server, postgres_databases):
    """iceberg+postgresql://…?warehouse=s3://…: the catalog and the ledger in a PostgreSQL
    database, the data files in S3 (moto's server over HTTP); the same answers."""
    from pyiceberg.catalog.sql import SqlCatalog

    landing = loaded[0]
    database = postgres_databases.create()
    s3_server.client().create_bucket(Bucket="lake")
    lake = f"iceberg+{database}?warehouse=s3://lake/cafe"
    env = {"AWS_ENDPOINT_URL_S3": s3_server.endpoint}
    result = run_cli("ingest", landing / "samples", "--warehouse", lake, env=env)
    assert result.code == 0, result.stderr
    reference = f"duckdb:///{landing.parent / 'samples-only.duckdb'}"
    assert run_cli("ingest", landing / "samples", "--warehouse", reference).code == 0
    for command in (("report", "--from", "2000-01-01", "--format", "json"), ("rejects", "--format", "json")):
        ours = run_cli(*command, "--warehouse", lake, env=env)
        assert ours.code == 0, ours.stderr
        assert ours.json() == _answer(reference, *command)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket="lake", Prefix="cafe/")["Contents"]]
    assert any(k.endswith(".parquet") for k in keys) and any(k.endswith(".metadata.json") for k in keys)
    # Another reader: pyiceberg alone, on the same catalog.
    catalog = SqlCatalog("cafe_etl", uri=database.replace("postgresql://", "postgresql+psycopg://"),
                         warehouse="s3://lake/cafe", **{"s3.endpoint": s3_server.endpoint, "s3.region": "us-east-1"})
    sales = catalog.load_table("cafe_etl.fact_sale").scan().to_arrow()
    assert sales.num_rows == ours_transactions(lake, env)
    postgres_databases.drop(database)


def ours_transactions(lake: str, env: dict) -> int:
    result = run_cli("report", "--from", "2000-01-01", "--format", "json", "--warehouse", lake, env=env)
    return result.json()["totals"]["transactions"]


def test_old_snapshots_are_forgotten_and_the_answers_stay(tmp_path):
    """A run ends by expiring snapshots older than the retention: each table keeps its
    current one (here, with the retention at zero, only that), and the figures stay."""
    from cafe_etl.engine import EnginePool
    from cafe_etl.warehouse.iceberg import IcebergWarehouse

    landing = tmp_path / "landing"
    shutil.copytree(SAMPLES / "canonical", landing)
    lake = _lake(tmp_path / "lake")
    assert run_cli("ingest", landing, "--warehouse", lake, env={"CAFE_ETL_BATCH_BYTES": "65536"}).code == 0
    before = _answer(lake, "report", "--from", "2000-01-01", "--format", "json")
    warehouse = IcebergWarehouse(lake)
    sales = warehouse.catalog().load_table("cafe_etl.fact_sale")
    assert len(sales.snapshots()) > 1  # several batches, several commits
    with EnginePool(workers=1, threads=1, memory_limit="256MB") as pool, warehouse.load_session(pool) as session:
        assert session.expire_snapshots(now=10**10) > 0  # far in the future: every snapshot is old
    for name in ("fact_sale", "dim_customer", "agg_pair_day"):
        table = warehouse.catalog().load_table(f"cafe_etl.{name}")
        assert [s.snapshot_id for s in table.snapshots()] == [table.metadata.current_snapshot_id]
    assert _answer(lake, "report", "--from", "2000-01-01", "--format", "json") == before


def test_loaders_at_the_same_time_lose_nothing(generated, tmp_path, postgres_databases):
    """Three loaders at once into one lake (catalog and ledger in PostgreSQL, files on a
    shared folder), on overlapping folders: Iceberg's optimistic commits are made again
    on the new state when another loader committed first, and the ledger's claims keep
    every file loaded once. The figures equal one loader's."""
    import subprocess

    from tests.conftest import CLI

    database = postgres_databases.create()
    lake = f"iceberg+{database}?warehouse=file://{tmp_path / 'lake'}"
    env = {**os.environ, "CAFE_ETL_BATCH_BYTES": "200000", "COLUMNS": "200"}
    loaders = [subprocess.Popen([*CLI, "ingest", str(generated), "--warehouse", lake], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for loader in loaders:
        _, err = loader.communicate(timeout=300)
        assert loader.returncode == 0, err
    reference = f"duckdb:///{tmp_path / 'one.duckdb'}"
    assert run_cli("ingest", generated, "--warehouse", reference).code == 0
    assert query(lake, """SELECT e.location, e.rows_loaded, f.sales FROM etl_file e
                          JOIN (SELECT file_id, count(*) AS sales FROM fact_sale GROUP BY 1) f USING (file_id)
                          WHERE f.sales <> e.rows_loaded""") == []
    assert query(lake, "SELECT count(*) - count(DISTINCT (file_id, source_row)) FROM fact_sale") == [(0,)]
    for command in (("report", "--from", "2000-01-01", "--format", "json"),
                    ("customers", "--from", "2000-01-01", "--format", "json")):
        assert _answer(lake, *command) == _answer(reference, *command)
    assert query(lake, "SELECT status, count(*) FROM etl_file GROUP BY 1") == query(
        reference, "SELECT status, count(*) FROM etl_file GROUP BY 1")
    postgres_databases.drop(database)


def test_a_load_that_dies_before_its_ledger_write_is_counted_once_when_taken_over(tmp_path, monkeypatch):
    """The batch's rows are committed to Iceberg, then the loader dies before the ledger
    records them: the files stay claimed. The next run takes the claims over and its
    commits delete those file ids' rows as they add them again: nothing counts twice."""
    from cafe_etl.config import load_settings
    from cafe_etl.pipeline.run import ingest
    from cafe_etl.warehouse import iceberg

    landing = tmp_path / "landing"
    shutil.copytree(SAMPLES / "canonical", landing)
    lake = _lake(tmp_path / "lake")

    def dies(self, con, records, run_id):
        raise KeyboardInterrupt  # the process killed between the Iceberg commits and the ledger's

    with monkeypatch.context() as patched:
        patched.setattr(iceberg.IcebergLoadSession, "_write_ledger", dies)
        with pytest.raises(KeyboardInterrupt):
            ingest([str(landing)], load_settings(warehouse=lake))
    assert query(lake, "SELECT count(*) FROM fact_sale")[0][0] > 0  # committed, not recorded
    assert query(lake, "SELECT count(*) FROM etl_file WHERE status = 'loading'")[0][0] > 0

    summary = ingest([str(landing)], load_settings(warehouse=lake))
    assert summary.ok
    reference = f"duckdb:///{tmp_path / 'w.duckdb'}"
    ingest([str(landing)], load_settings(warehouse=reference))
    for table in ("fact_sale", "fact_sale_item", "agg_product_day", "agg_customer_day", "dim_customer"):
        assert query(lake, f"SELECT count(*) FROM {table}") == query(reference, f"SELECT count(*) FROM {table}"), table
    assert query(lake, "SELECT status, count(*) FROM etl_file GROUP BY 1") == [("loaded", 7)]


def test_a_period_s_dates_are_pushed_down_into_the_iceberg_scan(loaded):
    """Reads scan each table's data files as an Arrow dataset: DuckDB hands the query's
    date range and columns to the scan, which skips the Parquet row groups outside it."""
    _, lake, duck, _ = loaded
    between, days = "SELECT count(*) FROM fact_sale WHERE date_key BETWEEN ? AND ?", [20240305, 20240306]
    plan = query(lake, f"EXPLAIN {between}", days)[0][1]
    scan = plan[plan.index("ARROW_SCAN"):]
    assert "Filters:" in scan and "date_key" in scan.split("Filters:", 1)[1]
    assert query(lake, between, days) == query(duck, between, days) != [(0,)]


def test_a_dead_claim_s_rows_leave_when_its_file_moves_on_to_another_version(tmp_path, monkeypatch):
    """Version 2 of a file is committed to Iceberg but its loader dies before the ledger
    records it; the file then changes again. Version 3 replaces version 1, and version
    2's rows, which no ledger row stands for, leave with that load: nothing counts twice."""
    from cafe_etl.config import load_settings
    from cafe_etl.pipeline.run import ingest
    from cafe_etl.warehouse import iceberg

    landing = tmp_path / "landing"
    shutil.copytree(SAMPLES / "canonical", landing)
    lake, reference = _lake(tmp_path / "lake"), f"duckdb:///{tmp_path / 'w.duckdb'}"
    changing = landing / "leeds_01-01-2020_09-00-00.csv"
    lines = changing.read_text().splitlines()
    assert ingest([str(landing)], load_settings(warehouse=lake)).ok
    changing.write_text("\n".join(lines[:-3]) + "\n")  # version 2

    def dies(self, con, records, run_id):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(iceberg.IcebergLoadSession, "_write_ledger", dies)
        with pytest.raises(KeyboardInterrupt):
            ingest([str(landing)], load_settings(warehouse=lake))
    changing.write_text("\n".join(lines[:-7]) + "\n")  # version 3
    assert ingest([str(landing)], load_settings(warehouse=lake)).ok
    assert ingest([str(landing)], load_settings(warehouse=reference)).ok
    for table in ("fact_sale", "fact_sale_item", "agg_sale_hour", "dim_customer"):
        assert query(lake, f"SELECT count(*) FROM {table}") == query(reference, f"SELECT count(*) FROM {table}"), table
