"""Crash safety: `ingest` killed with SIGKILL at random moments, then run again to
completion, leaves exactly the warehouse of one clean run, on both backends.

Each trial kills a loader somewhere in its run (reading, transforming, loading or
committing: the moments are spread over the whole run, whose batches are kept small
so every phase recurs), sometimes twice, then ingests to completion and checks: the
same `report --format json` as a clean run; no duplicate key in any fact, dimension
or aggregate; every loaded file holding exactly its rows; no claim left behind.

The same again with every file processed in slices (the large-file path, whose one
transaction per file spans many slices): half as many trials.

CI runs CAFE_ETL_CRASH_TRIALS (default 3) trials per backend, plus one sliced; the full soak is
    CAFE_ETL_CRASH_TRIALS=20 python -m pytest tests/test_crash.py
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from tests.conftest import BACKENDS, new_warehouse, query, run_cli

TRIALS = int(os.environ.get("CAFE_ETL_CRASH_TRIALS", "3"))
SMALL_BATCHES = {"CAFE_ETL_BATCH_BYTES": "150000"}  # two or three files per batch: many commits per run
SLICED_TRIALS = max(1, TRIALS // 2)
SLICES = {"CAFE_ETL_LARGE_FILE_BYTES": "1", "CAFE_ETL_BATCH_BYTES": "16384"}  # every file in 3-4 slices

UNIQUE_KEYS = {
    "fact_sale": "file_id, source_row",
    "fact_sale_item": "file_id, source_row, line_number",
    "dim_branch": "branch_key",
    "dim_product": "product_key",
    "dim_customer": "customer_key",
    "dim_date": "date_key",
    # a file's rows are the truth: one file may hold sales of several days
    "agg_product_day": "file_id, date_key, branch_key, product_key",
    "agg_sale_hour": "file_id, date_key, branch_key, hour",
    "agg_customer_day": "file_id, date_key, branch_key",
    "etl_reject": "file_id, source_row",
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cafe_etl.cli", *map(str, args)]


def _env(settings: dict[str, str] = SMALL_BATCHES) -> dict[str, str]:
    return {**os.environ, **settings}


@pytest.fixture(scope="module", params=BACKENDS)
def reference(request, generated, tmp_path_factory, postgres_databases):
    """One clean run: its report, and how long a run takes."""
    folder = tmp_path_factory.mktemp(f"crash-{request.param}")
    url = new_warehouse(request.param, folder, postgres_databases)
    started = time.monotonic()
    done = subprocess.run(_cli("ingest", generated, "--warehouse", url), env=_env(), capture_output=True, text=True)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    expected = run_cli("report", "--warehouse", url, "--format", "json").stdout
    yield request.param, expected, seconds
    postgres_databases.drop(url)


def check_consistent(url: str) -> None:
    for table, key in UNIQUE_KEYS.items():
        duplicates = query(url, f"SELECT count(*) FROM (SELECT {key} FROM {table} GROUP BY {key} "
                                "HAVING count(*) > 1) d")[0][0]
        assert duplicates == 0, f"duplicate keys in {table}"
    assert query(url, "SELECT count(*) FROM etl_file WHERE status = 'loading'")[0][0] == 0
    # Every loaded file holds exactly the rows the ledger says; nothing else holds any.
    mismatched = query(url, """
        SELECT count(*) FROM etl_file f
        LEFT JOIN (SELECT file_id, count(*) AS n FROM fact_sale GROUP BY file_id) s ON s.file_id = f.file_id
        LEFT JOIN (SELECT file_id, count(*) AS n FROM fact_sale_item GROUP BY file_id) i ON i.file_id = f.file_id
        WHERE (f.status = 'loaded' AND (coalesce(s.n, 0) <> f.rows_loaded OR coalesce(i.n, 0) <> f.items_loaded))
           OR (f.status <> 'loaded' AND (s.n IS NOT NULL OR i.n IS NOT NULL))""")[0][0]
    assert mismatched == 0
    orphans = query(url, "SELECT count(*) FROM fact_sale WHERE file_id NOT IN "
                         "(SELECT file_id FROM etl_file WHERE status = 'loaded')")[0][0]
    assert orphans == 0
    facts = query(url, "SELECT count(*), coalesce(sum(total), 0) FROM fact_sale")[0]
    aggregates = query(url, "SELECT coalesce(sum(transactions), 0), coalesce(sum(revenue), 0) FROM agg_sale_hour")[0]
    assert tuple(facts) == tuple(aggregates)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_killed_ingest_then_a_full_one_equals_a_clean_run(reference, generated, tmp_path, trial,
                                                            postgres_databases):
    backend, expected, seconds = reference
    _kill_then_finish(backend, generated, expected, seconds, SMALL_BATCHES, random.Random(f"{backend}-{trial}"),
                      tmp_path, postgres_databases)


@pytest.fixture(scope="module")
def few_files(generated, tmp_path_factory):
    """A dozen of the generated files: every one is sliced, so a run is slower."""
    folder = tmp_path_factory.mktemp("few") / "landing"
    folder.mkdir()
    for path in sorted(generated.glob("*.csv"))[:12]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize("trial", range(SLICED_TRIALS))
def test_a_killed_sliced_ingest_then_a_full_one_equals_a_whole_file_run(reference, few_files, tmp_path, trial,
                                                                         postgres_databases):
    backend = reference[0]
    clean = new_warehouse(backend, tmp_path / "clean", postgres_databases)
    assert run_cli("ingest", few_files, "--warehouse", clean).code == 0  # whole files
    expected = run_cli("report", "--warehouse", clean, "--format", "json").stdout
    postgres_databases.drop(clean)
    started = time.monotonic()
    timed = new_warehouse(backend, tmp_path / "timed", postgres_databases)
    assert run_cli("ingest", few_files, "--warehouse", timed, env=SLICES).code == 0
    seconds = time.monotonic() - started
    postgres_databases.drop(timed)
    _kill_then_finish(backend, few_files, expected, seconds, SLICES, random.Random(f"sliced-{backend}-{trial}"),
                      tmp_path, postgres_databases)


def _kill_then_finish(backend: str, landing, expected: str, seconds: float, settings: dict[str, str],
                      rng: random.Random, tmp_path, postgres_databases) -> None:
    url = new_warehouse(backend, tmp_path, postgres_databases)
    kills = []
    try:
        for _ in range(rng.choice([1, 1, 2])):  # sometimes the run after a crash is killed too
            loader = subprocess.Popen(_cli("ingest", landing, "--warehouse", url), env=_env(settings),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            moment = rng.uniform(0.4, max(0.6, seconds * 1.05))  # from start-up to the last commit
            time.sleep(moment)
            loader.send_signal(signal.SIGKILL)
            loader.wait(timeout=60)
            kills.append(round(moment, 2))
            assert "Traceback" not in loader.stderr.read()
        finished = run_cli("ingest", landing, "--warehouse", url, env=settings)
        assert finished.code == 0, (kills, finished.stderr)
        assert run_cli("report", "--warehouse", url, "--format", "json").stdout == expected, kills
        check_consistent(url)
    finally:
        postgres_databases.drop(url)
