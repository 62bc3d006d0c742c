"""Crash safety: `ingest` killed with SIGKILL in the middle of its run, then run again
to completion, leaves exactly the warehouse of one clean run, on both backends.

Each trial kills a loader on a pipeline event it logs (``ingest --log-format json``):
right after its k-th batch claim (the batch is then being read, transformed or
loaded) or right after its k-th file outcome (a load has just committed, and the
other engine is somewhere in its own batch), with k drawn so that work is always left.
Sometimes the run after a crash is killed too, on its first claim. Every kill is
checked to have landed mid-run: the loader died of SIGKILL, and the ledger shows a
part-done run (a claim left, or some but not all files loaded). Then a full ingest
must give the same `report --format json` as a clean run, no duplicate key in any
fact, dimension or aggregate, every loaded file holding exactly its rows, and no
claim left behind.

The same again with every file processed in slices (the large-file path, whose one
transaction per file spans many slices): half as many trials.

CI runs CAFE_ETL_CRASH_TRIALS (default 3) trials per backend, plus one sliced; the full soak is
    CAFE_ETL_CRASH_TRIALS=20 python -m pytest tests/test_crash.py
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import BACKENDS, chain_pair_mismatches, customer_mismatches, new_warehouse, query, run_cli

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


@dataclass(frozen=True)
class CleanRun:
    backend: str
    report: str  # `report --format json` after one clean run
    claims: int  # batch claims it logged
    files: int  # file outcomes it logged


def _logged_run(landing: Path, url: str, settings: dict[str, str]) -> tuple[int, int]:
    """Ingest ``landing`` to completion; the (claims, file outcomes) it logged."""
    done = subprocess.run(_cli("ingest", landing, "--warehouse", url, "--log-format", "json"), env=_env(settings),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line)["event"] for line in done.stderr.splitlines() if line.startswith("{")]
    return events.count("claimed"), events.count("file")


@pytest.fixture(scope="module", params=BACKENDS)
def reference(request, generated, tmp_path_factory, postgres_databases):
    folder = tmp_path_factory.mktemp(f"crash-{request.param}")
    url = new_warehouse(request.param, folder, postgres_databases)
    claims, files = _logged_run(generated, url, SMALL_BATCHES)
    assert claims >= 4 and files == len(list(generated.glob("*.csv")))
    yield CleanRun(request.param, run_cli("report", "--warehouse", url, "--format", "json").stdout, claims, files)
    postgres_databases.drop(url)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_killed_ingest_then_a_full_one_equals_a_clean_run(reference, generated, tmp_path, trial,
                                                            postgres_databases):
    _kill_then_finish(reference, generated, SMALL_BATCHES, random.Random(f"{reference.backend}-{trial}"),
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
    backend = reference.backend
    clean = new_warehouse(backend, tmp_path / "clean", postgres_databases)
    assert run_cli("ingest", few_files, "--warehouse", clean).code == 0  # whole files
    expected = run_cli("report", "--warehouse", clean, "--format", "json").stdout
    postgres_databases.drop(clean)
    sliced = new_warehouse(backend, tmp_path / "sliced", postgres_databases)
    claims, files = _logged_run(few_files, sliced, SLICES)
    postgres_databases.drop(sliced)
    _kill_then_finish(CleanRun(backend, expected, claims, files), few_files, SLICES,
                      random.Random(f"sliced-{backend}-{trial}"), tmp_path, postgres_databases)


def _kill_on_event(landing: Path, url: str, settings: dict[str, str], event: str, nth: int) -> None:
    """Start an ingest and SIGKILL it right after it logs its ``nth`` ``event``."""
    loader = subprocess.Popen(_cli("ingest", landing, "--warehouse", url, "--log-format", "json"),
                              env=_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen, lines = 0, []
    for line in loader.stderr:
        lines.append(line)
        if line.startswith("{") and json.loads(line)["event"] == event:
            seen += 1
            if seen == nth:
                loader.send_signal(signal.SIGKILL)
                break
    code = loader.wait(timeout=60)
    assert code == -signal.SIGKILL, (f"the loader was not killed mid-run: it ended with {code} after {seen} of "
                                     f"{nth} {event} events", lines[-3:])
    assert not any("Traceback" in line for line in lines)


def _part_done(url: str, files: int) -> None:
    """Evidence that the kill landed mid-run: a claim left, or some but not all files loaded."""
    loaded, claimed = query(url, "SELECT count(*) FILTER (WHERE status = 'loaded'), "
                                 "count(*) FILTER (WHERE status = 'loading') FROM etl_file")[0]
    assert loaded < files and (claimed > 0 or loaded > 0), (loaded, claimed, files)


def _kill_then_finish(clean: CleanRun, landing: Path, settings: dict[str, str], rng: random.Random, tmp_path,
                      postgres_databases) -> None:
    url = new_warehouse(clean.backend, tmp_path, postgres_databases)
    kills = []
    try:
        # After claim k (k < all claims) at least one batch is still to come; after file k
        # (k well short of all files) so are the files of the last batches.
        event, nth = rng.choice([("claimed", rng.randint(1, clean.claims - 1)),
                                 ("file", rng.randint(1, max(1, clean.files - 6)))])
        _kill_on_event(landing, url, settings, event, nth)
        _part_done(url, clean.files)
        kills.append((event, nth))
        if rng.random() < 1 / 3:  # the run after a crash is killed too, as it takes over
            _kill_on_event(landing, url, settings, "claimed", 1)
            _part_done(url, clean.files)
            kills.append(("claimed", 1))
        finished = run_cli("ingest", landing, "--warehouse", url, env=settings)
        assert finished.code == 0, (kills, finished.stderr)
        assert run_cli("report", "--warehouse", url, "--format", "json").stdout == clean.report, kills
        check_consistent(url)
    finally:
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
    assert customer_mismatches(url) == []  # each customer's first sale, as the facts hold it
    assert chain_pair_mismatches(url) == []  # the chain's pairs per day, as the branches' add up
