"""Large files, processed in slices of whole lines: the same warehouse as whole files.

``CAFE_ETL_LARGE_FILE_BYTES`` lowered to one byte makes every file of these tests a
"large" one, and a small ``CAFE_ETL_BATCH_BYTES`` cuts each into many slices, so the
carried state (layout, branch and header votes, repeated rows, per-file aggregates)
is tested across slice boundaries on the samples, the hostile corpus and generated
data with bad rows of every kind.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from tests.conftest import (
    BACKENDS,
    FIXTURES,
    chain_pair_mismatches,
    copy_samples,
    customer_mismatches,
    new_warehouse,
    query,
    run_cli,
)

from cafe_etl.config import Settings
from cafe_etl.engine import EnginePool
from cafe_etl.pipeline import large
from cafe_etl.pipeline.batch import read_file
from cafe_etl.sources.local import discover

# 16 KiB slices: every sample of more than one slice's worth (most are 50-100 KB) is cut
# several times, and the repeated rows of the file below lie slices apart.
SLICED = {"CAFE_ETL_LARGE_FILE_BYTES": "1", "CAFE_ETL_BATCH_BYTES": "16384"}

ROW = ('{day}/03/2024 {h:02d}:{m:02d},Slice Town,Customer {n},"Large Latte - 2.45, Regular Americano - 1.95",'
       '4.40,CARD,4{n:015d}')


def _repeating_file(path: Path) -> list[int]:
    """A file whose repeated rows lie slices apart, with a header, a BOM and CRLF
    line ends; the lines (1-based) that repeat an earlier one."""
    lines = ["\ufeffdate,branch,customer,basket,total,payment,card"]
    for n in range(900):
        k = n % 700  # rows 700.. repeat rows 0..
        lines.append(ROW.format(day=5, h=8 + k // 60, m=k % 60, n=k))
    lines.append("")  # a blank line
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return list(range(702, 902))


def _table_rows(url: str) -> dict[str, list[tuple]]:
    """Every row a load writes, keyed by file location rather than by file id."""
    by_file = "JOIN etl_file f USING (file_id)"
    return {
        "ledger": query(url, """SELECT location, status, format, branch_id, business_date, rows_read, rows_loaded,
                                       rows_rejected, rows_ignored, items_loaded, error
                                FROM etl_file ORDER BY location"""),
        "sales": query(url, f"""SELECT f.location, source_row, date_key, time_key, branch_key, payment_key,
                                       customer_key, item_count, total
                                FROM fact_sale {by_file} ORDER BY 1, 2"""),
        "items": query(url, f"""SELECT f.location, source_row, line_number, product_key, unit_price, i.date_key,
                                       i.branch_key
                                FROM fact_sale_item i {by_file} ORDER BY 1, 2, 3"""),
        "rejects": query(url, f"""SELECT f.location, source_row, reason_code, detail, row_data
                                  FROM etl_reject {by_file} ORDER BY 1, 2"""),
        "product_day": query(url, f"""SELECT f.location, a.date_key, a.branch_key, product_key, quantity, revenue
                                      FROM agg_product_day a {by_file} ORDER BY 1, 2, 3, 4"""),
        "sale_hour": query(url, f"""SELECT f.location, a.date_key, a.branch_key, hour, transactions, items, revenue
                                    FROM agg_sale_hour a {by_file} ORDER BY 1, 2, 3, 4"""),
        "customer_day": query(url, f"""SELECT f.location, a.date_key, a.branch_key, customers
                                       FROM agg_customer_day a {by_file} ORDER BY 1, 2, 3"""),
        "branches": query(url, "SELECT branch_key, branch_id, name, first_seen FROM dim_branch ORDER BY 1"),
        "products": query(url, "SELECT product_key, size, name, flavour FROM dim_product ORDER BY 1"),
        "customers": query(url, "SELECT customer_key, first_seen, first_branch_key FROM dim_customer ORDER BY 1"),
        "dates": query(url, "SELECT date_key FROM dim_date ORDER BY 1"),
    }


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> tuple[Path, list[int]]:
    folder = tmp_path_factory.mktemp("large") / "landing"
    result = run_cli("generate", folder / "generated", "--branches", 3, "--days", 2, "--seed", 21,
                     "--bad-rate", 0.05)
    assert result.code == 0, result.stderr
    copy_samples(folder / "samples")
    for path in sorted((FIXTURES / "hostile").glob("*.csv")):
        shutil.copy(path, folder / path.name)
    repeats = _repeating_file(folder / "slice_town_05-03-2024_08-00-00.csv")
    return folder, repeats


@pytest.mark.parametrize("backend", BACKENDS)
def test_slices_load_exactly_what_whole_files_load(backend, landing, tmp_path, postgres_databases):
    folder, repeats = landing
    whole = new_warehouse(backend, tmp_path / "whole", postgres_databases)
    sliced = new_warehouse(backend, tmp_path / "sliced", postgres_databases)
    first = run_cli("ingest", folder, "--warehouse", whole, "--json")
    second = run_cli("ingest", folder, "--warehouse", sliced, "--json", env=SLICED)
    assert first.code == second.code == 1, second.stderr  # the hostile files fail, in both
    assert "Traceback" not in second.stderr
    outcome = {Path(f["location"]).name: f for f in second.json()["file_results"]}
    town = outcome["slice_town_05-03-2024_08-00-00.csv"]
    assert (town["rows_loaded"], town["rejects_by_reason"], town["rows_ignored"]) == (700, {"DUPLICATE_ROW": 200}, 2)

    expected, got = _table_rows(whole), _table_rows(sliced)
    for table in expected:
        assert got[table] == expected[table], table
    assert len(got["sales"]) > 3000 and {r[2] for r in got["rejects"]} >= {"DUPLICATE_ROW", "TOTAL_MISMATCH"}
    # The repeats were found across slices, each pointing at its first line.
    town_rejects = [(row, detail) for location, row, _, detail, _ in got["rejects"]
                    if location.endswith("slice_town_05-03-2024_08-00-00.csv")]
    assert [row for row, _ in town_rejects] == repeats
    assert town_rejects[0][1] == "same bytes as line 2"
    report = [run_cli("report", "--warehouse", url, "--format", "json").stdout for url in (whole, sliced)]
    assert report[0] == report[1]
    assert chain_pair_mismatches(sliced) == [] and customer_mismatches(sliced) == []
    postgres_databases.drop(whole)
    postgres_databases.drop(sliced)


def test_slices_load_into_iceberg_exactly_what_whole_files_load_into_duckdb(landing, tmp_path, postgres_databases):
    """An Iceberg warehouse keeps a sliced file's rows until its last slice, then commits
    it once: row for row what a whole load gives (a few files: each slice costs commits)."""
    folder, repeats = landing
    few = tmp_path / "few"
    few.mkdir()
    for path in [folder / "slice_town_05-03-2024_08-00-00.csv", *sorted((folder / "generated").glob("*.csv"))[:2]]:
        shutil.copy(path, few / path.name)
    whole = new_warehouse("duckdb", tmp_path / "whole", postgres_databases)
    sliced = new_warehouse("iceberg", tmp_path / "sliced", postgres_databases)
    assert run_cli("ingest", few, "--warehouse", whole).code == 0
    result = run_cli("ingest", few, "--warehouse", sliced, "--json", env=SLICED)
    assert result.code == 0, result.stderr
    expected, got = _table_rows(whole), _table_rows(sliced)
    for table in expected:
        assert got[table] == expected[table], table
    assert [row for location, row, *_ in got["rejects"] if "slice_town" in location] == repeats


def test_validate_lists_the_same_problems_in_slices(landing):
    folder, _ = landing
    whole = run_cli("validate", folder, "--json")
    sliced = run_cli("validate", folder, "--json", env=SLICED)
    assert whole.code == sliced.code == 1
    assert sliced.json()["problems"] == whole.json()["problems"]
    assert len(sliced.json()["problems"]) > 200


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_version_of_a_sliced_file_replaces_the_old_one_whole(backend, tmp_path, postgres_databases):
    path = tmp_path / "landing" / "slice_town_05-03-2024_08-00-00.csv"
    path.parent.mkdir()
    _repeating_file(path)
    warehouse = new_warehouse(backend, tmp_path, postgres_databases)
    assert run_cli("ingest", path.parent, "--warehouse", warehouse, env=SLICED).code == 0
    # The first 100 rows now mismatch their total, and their later repeats are repeats no more.
    path.write_bytes(path.read_bytes().replace(b",4.40,CARD,", b",4.41,CARD,", 100))
    again = run_cli("ingest", path.parent, "--warehouse", warehouse, "--json", env=SLICED).json()
    assert again["file_results"][0]["outcome"] == "reloaded"
    assert query(warehouse, "SELECT status, count(*) FROM etl_file GROUP BY 1 ORDER BY 1") == [
        ("loaded", 1), ("replaced", 1)]
    (new_id,) = query(warehouse, "SELECT file_id FROM etl_file WHERE status = 'loaded'")[0]
    for table in ("fact_sale", "fact_sale_item", "etl_reject", "agg_product_day", "agg_sale_hour",
                  "agg_customer_day"):
        assert query(warehouse, f"SELECT count(*) FROM {table} WHERE file_id <> ?", [new_id])[0][0] == 0, table
    assert query(warehouse, "SELECT count(*) FROM fact_sale")[0][0] == 700
    assert query(warehouse, "SELECT sum(transactions) FROM agg_sale_hour")[0][0] == 700
    reasons = dict(query(warehouse, "SELECT reason_code, count(*) FROM etl_reject GROUP BY 1"))
    assert reasons == {"TOTAL_MISMATCH": 100, "DUPLICATE_ROW": 100}
    assert chain_pair_mismatches(warehouse) == [] and customer_mismatches(warehouse) == []
    pairs = query(warehouse, "SELECT date_key, a_key, b_key, sales FROM agg_pair_date")
    assert len(pairs) == 1 and pairs[0][-1] == 700
    # Processed again in slices (it has rejects): its pairs leave and come back once.
    replayed = run_cli("replay", "--warehouse", warehouse, "--json", env=SLICED)
    assert replayed.code == 0 and replayed.json()["files"]["loaded"] == 1, replayed.stderr
    assert query(warehouse, "SELECT date_key, a_key, b_key, sales FROM agg_pair_date") == pairs
    assert chain_pair_mismatches(warehouse) == [] and customer_mismatches(warehouse) == []
    postgres_databases.drop(warehouse)


def test_a_sliced_file_that_is_not_an_export_loads_nothing(tmp_path):
    path = tmp_path / "landing" / "wide_05-03-2024_08-00-00.csv"
    path.parent.mkdir()
    path.write_text("".join(f"a,b,c,d,e,f,g,{n}\n" for n in range(2000)))
    warehouse = tmp_path / "w.duckdb"
    result = run_cli("ingest", path.parent, "--warehouse", warehouse, "--json", env=SLICED)
    assert result.code == 1 and "Traceback" not in result.stderr
    (only,) = result.json()["file_results"]
    assert only["outcome"] == "failed" and "not a branch export" in only["error"]
    assert query(warehouse, "SELECT count(*) FROM etl_reject")[0][0] == 0
    assert query(warehouse, "SELECT status, rows_loaded FROM etl_file") == [("failed", 0)]


def test_a_file_that_changes_between_fingerprint_and_slicing_is_refused(tmp_path):
    path = tmp_path / "slice_town_05-03-2024_08-00-00.csv"
    _repeating_file(path)
    (source,) = discover(str(path))
    read = read_file(source)
    path.write_bytes(path.read_bytes().replace(b"Customer 1,", b"Customer 9,"))
    settings = Settings(batch_bytes=8192, large_file_bytes=1)
    assert large.can_slice(read, settings)
    with EnginePool(workers=1, threads=1, memory_limit="256MB") as pool:
        verdict = large.judge(pool.engines[0], read, settings, b"k" * 32, each_slice=lambda: None)
    assert verdict.counts is None and "changed while it was being read" in verdict.failure
    assert read.sha256 != hashlib.sha256(path.read_bytes()).hexdigest()


def _short_of_memory(monkeypatch, after_slices: int, times: int = 1) -> dict:
    """``large.judge`` runs out of memory on its first ``times`` calls, each time after
    ``after_slices`` slices were handed on (so a part of the file is already in the load's
    transaction)."""
    import duckdb

    state = {"left": times, "calls": 0}
    real_judge = large.judge

    def judge(engine, read, settings, secret, each_slice):
        state["calls"] += 1
        handed = 0

        def each() -> None:
            nonlocal handed
            if state["left"] and handed == after_slices:
                state["left"] -= 1
                raise duckdb.OutOfMemoryException("could not allocate block")
            handed += 1
            each_slice()

        return real_judge(engine, read, settings, secret, each)

    monkeypatch.setattr(large, "judge", judge)
    return state


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sliced_file_that_ran_out_of_memory_once_loads_whole_when_retried_alone(
        backend, tmp_path, postgres_databases, monkeypatch):
    """The other engine's batch can take the memory a slice needs: the file's transaction
    rolls back and the file is tried again alone, not failed as too large."""
    from cafe_etl.config import load_settings
    from cafe_etl.pipeline.run import ingest

    folder = tmp_path / "landing"
    folder.mkdir()
    _repeating_file(folder / "slice_town_05-03-2024_08-00-00.csv")
    expected = new_warehouse(backend, tmp_path / "expected", postgres_databases)
    retried = new_warehouse(backend, tmp_path / "retried", postgres_databases)
    settings = load_settings(threads=2).with_overrides(large_file_bytes=1, batch_bytes=16384)
    assert ingest([str(folder)], settings.with_overrides(warehouse=expected)).ok

    state = _short_of_memory(monkeypatch, after_slices=2)
    summary = ingest([str(folder)], settings.with_overrides(warehouse=retried))
    assert state == {"left": 0, "calls": 2}
    assert summary.ok and [f.outcome for f in summary.files] == ["loaded"]
    assert (summary.files[0].rows_loaded, summary.files[0].rejects_by_reason) == (700, {"DUPLICATE_ROW": 200})
    want, got = _table_rows(expected), _table_rows(retried)
    for table in want:
        assert got[table] == want[table], table
    postgres_databases.drop(expected)
    postgres_databases.drop(retried)


def test_a_sliced_file_short_of_memory_even_alone_fails_as_too_large(tmp_path, monkeypatch):
    from cafe_etl.config import load_settings
    from cafe_etl.pipeline.run import ingest

    folder = tmp_path / "landing"
    folder.mkdir()
    _repeating_file(folder / "slice_town_05-03-2024_08-00-00.csv")
    state = _short_of_memory(monkeypatch, after_slices=1, times=2)
    warehouse = tmp_path / "w.duckdb"
    settings = load_settings(warehouse=str(warehouse), threads=2, memory_limit="300MB").with_overrides(
        large_file_bytes=1, batch_bytes=16384)
    (only,) = ingest([str(folder)], settings).files
    assert state == {"left": 0, "calls": 2}  # once with the other engine, once alone
    assert only.outcome == "failed" and "too large to process within the engine's memory limit (300MB)" in only.error
    assert query(warehouse, "SELECT status, rows_loaded FROM etl_file") == [("failed", 0)]
    for table in ("fact_sale", "fact_sale_item", "etl_reject", "agg_product_day", "agg_sale_hour"):
        assert query(warehouse, f"SELECT count(*) FROM {table}")[0][0] == 0, table


def test_validate_retries_a_sliced_file_alone_and_lists_its_problems_once(tmp_path, monkeypatch):
    from cafe_etl.config import load_settings
    from cafe_etl.pipeline.dryrun import dry_run

    folder = tmp_path / "landing"
    folder.mkdir()
    repeats = _repeating_file(folder / "slice_town_05-03-2024_08-00-00.csv")
    settings = load_settings(threads=2).with_overrides(large_file_bytes=1, batch_bytes=16384)
    state = _short_of_memory(monkeypatch, after_slices=2)
    summary, problems = dry_run([str(folder)], settings)
    assert state == {"left": 0, "calls": 2}
    assert [f.outcome for f in summary.files] == ["valid"]
    assert [(p.line, p.reason) for p in problems] == [(line, "DUPLICATE_ROW") for line in repeats]
