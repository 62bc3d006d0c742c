"""No file can stop a run (DESIGN §3): an unexpected error while a batch is transformed
or loaded is narrowed down to the file that causes it, which fails alone with a
sentence, is never left claimed, and the other files load.

The faults are real ones, raised where such faults arise: the engine's own ``error()``
on a marked row while the batch is transformed, and a CHECK constraint of the
warehouse that refuses a marked value while the batch is loaded. Both backends."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
from tests.conftest import SAMPLES, query

from cafe_etl.config import Settings
from cafe_etl.pipeline import validate
from cafe_etl.pipeline.dryrun import dry_run
from cafe_etl.pipeline.run import ingest

POISON = "leeds_02-01-2020_09-00-00.csv"
MARK = "POISONED"


@pytest.fixture
def landing(tmp_path) -> Path:
    """The canonical samples and one file with a marked row (a BAD_TOTAL reject, as rules go)."""
    folder = tmp_path / "landing"
    shutil.copytree(SAMPLES / "canonical", folder)
    good = (SAMPLES / "canonical" / "leeds_01-01-2020_09-00-00.csv").read_text().replace("01/01/2020", "02/01/2020")
    lines = good.splitlines()
    lines[3] = lines[3].rsplit(",", 3)[0] + f",{MARK},CASH,"
    (folder / POISON).write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def engine_fault(monkeypatch):
    """The row checks fail, in the engine, on any batch that holds the marked row."""
    monkeypatch.setattr(validate, "_CHECK", validate._CHECK.replace(
        "WHEN duplicate_of IS NOT NULL THEN 'DUPLICATE_ROW'",
        f"WHEN contains(raw, '{MARK}') THEN error('poisoned row') WHEN duplicate_of IS NOT NULL THEN 'DUPLICATE_ROW'"))


def refuse_the_mark(url: str) -> None:
    """A warehouse that refuses the marked value in the quarantine (a CHECK constraint)."""
    ingest([], Settings(warehouse=url), files=[])  # creates the schema
    check = f"CHECK (row_data NOT LIKE '%{MARK}%')"
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as con:
            con.execute(f"ALTER TABLE etl_reject ADD CONSTRAINT no_mark {check}")
        return
    con = duckdb.connect(url.removeprefix("duckdb:///"))
    try:  # DuckDB adds no constraint to a table: the (empty) table is made again with it
        con.execute("DROP TABLE etl_reject")
        con.execute(f"""CREATE TABLE etl_reject (file_id BIGINT NOT NULL, source_row INTEGER NOT NULL,
                        reason_code VARCHAR NOT NULL, detail VARCHAR, row_data VARCHAR {check}, run_id BIGINT)""")
    finally:
        con.close()


def assert_isolated(summary, url: str, stage: str, landing: Path) -> None:
    outcomes = {Path(f.location).name: f for f in summary.files}
    poison = outcomes.pop(POISON)
    assert poison.outcome == "failed"
    assert poison.error == (f"{POISON} could not be {stage}: something in it made the pipeline fail unexpectedly; "
                            "it was set aside and the other files were loaded (keep the file and report it)")
    assert {f.outcome for f in outcomes.values()} == {"loaded"}
    assert len(outcomes) == len(list(landing.glob("*.csv"))) - 1
    assert not summary.ok  # the CLI's exit status 1
    statuses = dict(query(url, "SELECT status, count(*) FROM etl_file GROUP BY status"))
    assert statuses == {"loaded": len(outcomes), "failed": 1}  # nothing left claimed
    assert query(url, "SELECT count(*) FROM fact_sale")[0][0] == sum(f.rows_loaded for f in outcomes.values())
    assert query(url, "SELECT count(*) FROM etl_reject r JOIN etl_file f USING (file_id) WHERE f.location LIKE ?",
                 [f"%{POISON}"])[0][0] == 0
    again = ingest([str(landing)], Settings(warehouse=url))
    assert {f.outcome for f in again.files} == {"unchanged"}  # a failure that would repeat is not retried


@pytest.mark.parametrize("sliced", [False, True], ids=["batch", "sliced"])
def test_an_engine_error_fails_only_the_file_that_causes_it(warehouse_url, landing, engine_fault, sliced):
    settings = Settings(warehouse=warehouse_url, large_file_bytes=1 if sliced else Settings.large_file_bytes)
    assert_isolated(ingest([str(landing)], settings), warehouse_url, "transformed", landing)


def test_a_value_the_warehouse_refuses_fails_only_its_file(warehouse_url, landing):
    refuse_the_mark(warehouse_url)
    assert_isolated(ingest([str(landing)], Settings(warehouse=warehouse_url)), warehouse_url, "loaded", landing)


def test_a_value_refused_in_a_sliced_load_fails_only_its_file(warehouse_url, landing):
    refuse_the_mark(warehouse_url)
    summary = ingest([str(landing)], Settings(warehouse=warehouse_url, large_file_bytes=1))
    assert_isolated(summary, warehouse_url, "loaded", landing)


def test_validate_narrows_an_engine_error_to_its_file(landing, engine_fault):
    summary, problems = dry_run([str(landing)], Settings(warehouse="unused.duckdb"))
    failed = [p for p in problems if p.reason == "FILE_FAILED"]
    assert [(Path(p.location).name, p.detail) for p in failed] == [
        (POISON, f"{POISON} could not be transformed: something in it made the pipeline fail unexpectedly; "
                 "it was set aside and the other files were checked (keep the file and report it)")]
    assert {f.outcome for f in summary.files if Path(f.location).name != POISON} == {"valid"}
