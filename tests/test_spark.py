"""The Spark executor (DESIGN §12): batches transformed as Spark tasks in local mode,
committed by the driver through the ledger.

Spark retries a failed task (``local[2,4]``: up to 4 attempts), so a task that fails
once must leave the result exact, and a second run must load nothing. Spark starts in
about 8 s, so these tests share one application per process where they can. They
need pyspark (``pip install -e '.[spark]'``) and Java 17 (``make java``); without
them they skip, except on CI."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
from tests.conftest import SAMPLES, new_warehouse, query, run_cli

from cafe_etl import keys
from cafe_etl.config import Settings, load_settings
from cafe_etl.pipeline import validate
from cafe_etl.pipeline.run import ingest
from cafe_etl.pipeline.spark import TaskFile, TaskInput, TaskResult, spark_executor, transform_task

MASTER = "local[2,4]"  # two task slots; each task may be tried four times


def _spark_problem() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "no Java for Spark (Debian: apt-get install openjdk-17-jre-headless; `make java`)"
    return None


@pytest.fixture(scope="module", autouse=True)
def _require_spark():
    problem = _spark_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"Spark tests cannot run on CI: {problem}")
        pytest.skip(problem)


@pytest.fixture
def landing(tmp_path, generated) -> Path:
    """A small generated chain (bad rows of every kind) and the real samples."""
    folder = tmp_path / "landing"
    shutil.copytree(generated, folder / "generated")
    shutil.copytree(SAMPLES, folder / "samples")
    return folder


def _settings(url: str) -> Settings:
    # Batches of 1 MiB: one run is several Spark jobs, two of them in flight at a time.
    return load_settings(warehouse=url, batch_bytes=1 << 20, executor="spark", spark_master=MASTER)


def _picture(url: str) -> dict:
    """What a warehouse holds, in values: facts, items, rejects, customers, aggregates, ledger."""
    return {
        "sales": query(url, "SELECT count(*), sum(total), count(DISTINCT customer_key) FROM fact_sale"),
        "items": query(url, "SELECT count(*), sum(unit_price) FROM fact_sale_item"),
        "rejects": query(url, "SELECT reason_code, count(*) FROM etl_reject GROUP BY 1 ORDER BY 1"),
        "customers": query(url, "SELECT count(*), min(first_seen), max(first_seen) FROM dim_customer"),
        "pairs": query(url, "SELECT count(*), sum(sales) FROM agg_pair_day"),
        "products": query(url, "SELECT sum(quantity), sum(revenue), sum(sales) FROM agg_product_day"),
        "files": query(url, "SELECT status, count(*), sum(rows_loaded), sum(rows_rejected) FROM etl_file "
                            "GROUP BY 1 ORDER BY 1"),
        "sold_by_file": query(url, "SELECT e.location, count(*), sum(f.total) FROM fact_sale f "
                                   "JOIN etl_file e ON e.file_id = f.file_id GROUP BY 1 ORDER BY 1"),
    }


@pytest.mark.parametrize("backend", ["duckdb", "postgres", "iceberg"])
def test_retried_tasks_load_every_file_exactly_once(backend, landing, tmp_path, postgres_databases):
    reference = f"duckdb:///{tmp_path / 'local.duckdb'}"
    ingest([str(landing)], load_settings(warehouse=reference))
    if backend == "iceberg":
        pytest.importorskip("pyiceberg")
        url = f"iceberg:///{tmp_path / 'lake'}"
    else:
        url = new_warehouse(backend, tmp_path, postgres_databases)
    settings = _settings(url)
    failed = tmp_path / "failed-attempts"
    failed.mkdir()

    def flaky(task: TaskInput):
        """Every task's first attempt fails, as a lost executor would: Spark must retry it.
        (Defined here, so Spark sends it by value: the workers cannot import the tests.)"""
        from pyspark import TaskContext

        context = TaskContext.get()
        if context.attemptNumber() == 0:
            (failed / f"stage-{context.stageId()}").touch()
            raise RuntimeError("executor lost")
        return transform_task(task)

    with spark_executor(settings, keys.secret_for(settings), task=flaky) as executor:
        first = ingest([str(landing)], settings, executor=executor)
        again = ingest([str(landing)], settings, executor=executor)
    assert first.ok and len(first.files) == len(list(landing.rglob("*.csv")))
    assert len(list(failed.iterdir())) >= 4  # every batch's task failed once, and was retried
    assert {f.outcome for f in first.files} <= {"loaded", "copy", "failed"}
    assert _picture(url) == _picture(reference)
    # The second run finds every version done: nothing is transformed or loaded again.
    assert {f.outcome for f in again.files} <= {"unchanged", "copy"}
    assert _picture(url) == _picture(reference)
    postgres_databases.drop(url)


def test_a_file_that_breaks_the_engine_in_a_task_is_set_aside_alone(tmp_path):
    """A real engine fault inside the task (the row checks fail on a marked row) is settled
    on the driver as in a local run: split down to the one file, which fails with a
    sentence, and the others load."""
    folder = tmp_path / "landing"
    shutil.copytree(SAMPLES / "canonical", folder)
    poison = folder / "leeds_02-01-2020_09-00-00.csv"
    text = (SAMPLES / "canonical" / "leeds_01-01-2020_09-00-00.csv").read_text().replace("01/01/2020", "02/01/2020")
    lines = text.splitlines()
    lines[3] = lines[3].rsplit(",", 3)[0] + ",POISONED,CASH,"
    poison.write_text("\n".join(lines) + "\n")
    check = validate._CHECK.replace("WHEN duplicate_of IS NOT NULL THEN 'DUPLICATE_ROW'",
                                    "WHEN contains(raw, 'POISONED') THEN error('poisoned row') "
                                    "WHEN duplicate_of IS NOT NULL THEN 'DUPLICATE_ROW'")

    def poisoned(task: TaskInput):
        from cafe_etl.pipeline import validate as in_task

        in_task._CHECK = check
        return transform_task(task)

    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    settings = _settings(url).with_overrides(batch_bytes=64 << 20)  # every file in one batch
    with spark_executor(settings, keys.secret_for(settings), task=poisoned) as executor:
        summary = ingest([str(folder)], settings, executor=executor)
    outcomes = {Path(f.location).name: f for f in summary.files}
    assert outcomes[poison.name].outcome == "failed"
    assert "could not be transformed" in outcomes[poison.name].error
    assert "poisoned" not in outcomes[poison.name].error  # never the engine's message
    assert sum(f.outcome == "loaded" for f in summary.files) == len(outcomes) - 1
    assert query(url, "SELECT count(*) FROM etl_file WHERE status = 'loading'") == [(0,)]


def test_the_command_line_runs_on_spark_and_matches_the_local_executor(tmp_path):
    spark = tmp_path / "spark.duckdb"
    local = tmp_path / "local.duckdb"
    result = run_cli("ingest", SAMPLES, "--executor", "spark", "--spark-master", MASTER, "--warehouse", spark,
                     "--json")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert run_cli("ingest", SAMPLES, "--warehouse", local).code == 0
    reports = [run_cli("report", "--from", "2000-01-01", "--format", "json", "--warehouse", w).json()
               for w in (spark, local)]
    assert reports[0] == reports[1] and reports[0]["totals"]["transactions"] > 4000


def test_a_task_is_sent_no_contents_and_no_secret(tmp_path):
    """PySpark writes what it parallelises to a temporary file: a task gets locations,
    content hashes and a fingerprint of the secret, never a name, a card or the key."""
    settings = load_settings(warehouse="postgresql://cafe:s3cret-password@db/cafe", customer_key="ab" * 32)
    from cafe_etl.pipeline.spark import _scrubbed

    sent = TaskInput((TaskFile(str(SAMPLES / "canonical" / "leeds_01-01-2020_09-00-00.csv"), "0" * 64),), {0: 1},
                     _scrubbed(settings), keys.check_of(bytes.fromhex("ab" * 32)))
    wire = pickle.dumps(sent)
    name = (SAMPLES / "canonical" / "leeds_01-01-2020_09-00-00.csv").read_text().splitlines()[0].split(",")[2]
    assert name.encode() not in wire
    assert b"abababab" not in wire and b"s3cret-password" not in wire


def test_a_task_refuses_a_changed_file_and_a_different_key(tmp_path):
    """Without Spark: the task function alone. A file that is not the claimed version
    fails, to be read again; a task whose secret differs from the driver's does nothing."""
    from cafe_etl.pipeline.batch import read_file
    from cafe_etl.sources import locate

    path = tmp_path / "leeds_01-01-2020_09-00-00.csv"
    shutil.copy(SAMPLES / "canonical" / path.name, path)
    claimed = read_file(locate(str(path)))
    settings = load_settings()
    check = keys.check_of(keys.secret_for(settings))
    task = TaskInput((TaskFile(str(path), claimed.sha256),), {0: 7}, settings, check)
    assert transform_task(task).verdicts[0][2] is None  # loads
    path.write_text(path.read_text() + path.read_text().splitlines()[-1] + "\n")
    assert transform_task(task).trouble == "unread"  # the driver transforms it from what it read
    assert transform_task(TaskInput(task.files, task.file_ids, settings, "0" * 16)).trouble == "key"


def test_a_batch_the_executors_cannot_read_is_transformed_by_the_driver(tmp_path):
    """Executors that cannot reach the files (another machine, a folder not mounted there)
    hand the batch back: the driver transforms what it read itself, and nothing fails."""
    url, reference = f"duckdb:///{tmp_path / 'w.duckdb'}", f"duckdb:///{tmp_path / 'local.duckdb'}"
    settings = _settings(url)
    with spark_executor(settings, keys.secret_for(settings), task=lambda task: TaskResult(trouble="unread")) as spark:
        summary = ingest([str(SAMPLES / "canonical")], settings, executor=spark)
    ingest([str(SAMPLES / "canonical")], load_settings(warehouse=reference))
    assert summary.ok and summary.count("loaded") == 7
    assert _picture(url) == _picture(reference)
