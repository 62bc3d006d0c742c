"""User mistakes: one clear line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest
from tests.conftest import SAMPLES, query, run_cli


def assert_one_clear_line(result, code: int, *words: str) -> None:
    assert result.code == code, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    for word in words:
        assert word in lines[0], lines[0]


def test_missing_source(tmp_path):
    result = run_cli("ingest", tmp_path / "nope", "--warehouse", tmp_path / "w.duckdb")
    assert_one_clear_line(result, 2, "no such file or folder", "nope")


def test_glob_matching_nothing(tmp_path):
    result = run_cli("ingest", str(tmp_path / "*.csv"), "--warehouse", tmp_path / "w.duckdb")
    assert_one_clear_line(result, 2, "no file matches")


@pytest.mark.parametrize("url", ["postgres-ish://x", "duckdb://", "duckdb:///", "duckdb:///:memory:"])
def test_bad_warehouse_url(tmp_path, url):
    result = run_cli("ingest", SAMPLES / "canonical", "--warehouse", url)
    assert_one_clear_line(result, 2, "warehouse")


def test_warehouse_from_environment(tmp_path):
    target = tmp_path / "from-env.duckdb"
    result = run_cli("ingest", SAMPLES / "canonical", env={"CAFE_ETL_WAREHOUSE": f"duckdb:///{target}"})
    assert result.code == 0, result.stderr
    assert target.exists()


@pytest.mark.parametrize(("args", "env", "words"), [
    ((), {"CAFE_ETL_EXECUTOR": "hadoop"}, ["CAFE_ETL_EXECUTOR", "local, spark"]),
    (("--executor", "spark", "--spark-master", "nonsense://x"), {}, ["not a Spark master", "local[N]"]),
    (("--executor", "spark", "--spark-master", "local[0]"), {}, ["not a Spark master"]),
])
def test_a_wrong_executor_or_spark_master_is_one_line(tmp_path, args, env, words):
    result = run_cli("ingest", SAMPLES / "canonical", *args, "--warehouse", tmp_path / "w.duckdb", env=env)
    assert_one_clear_line(result, 2, *words)


def test_unreadable_warehouse(tmp_path):
    bogus = tmp_path / "not-a-warehouse.duckdb"
    bogus.write_text("this is not a database\n" * 100)
    for command in (["ingest", SAMPLES / "canonical"], ["report"], ["status"]):
        result = run_cli(*command, "--warehouse", bogus)
        assert_one_clear_line(result, 3, str(bogus))


def test_report_before_any_ingest(tmp_path):
    result = run_cli("report", "--warehouse", tmp_path / "none.duckdb")
    assert_one_clear_line(result, 3, "no warehouse", "ingest")


def test_unknown_branch_suggests_close_names(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    assert run_cli("ingest", SAMPLES / "canonical", "--warehouse", warehouse).code == 0
    result = run_cli("report", "--warehouse", warehouse, "--branch", "Leds")
    assert_one_clear_line(result, 2, "unknown branch 'Leds'", "Leeds")


def test_period_the_wrong_way_round(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    assert run_cli("ingest", SAMPLES / "canonical", "--warehouse", warehouse).code == 0
    result = run_cli("report", "--warehouse", warehouse, "--from", "2024-03-10", "--to", "2024-03-01")
    assert_one_clear_line(result, 2, "after")


@pytest.mark.parametrize(("args", "words"), [
    (["report", "--from", "04/03/2024"], ["--from", "'04/03/2024' is not a date", "YYYY-MM-DD"]),
    (["report", "--to", "2024-13-01"], ["--to", "'2024-13-01' is not a date"]),
    (["replay", "--date", "yesterday-ish"], ["--date", "is not a date"]),
    (["report", "--format", "yaml"], ["--format", "'yaml' is not one of"]),
    (["report", "--to", "0001-01-01"], ["--to", "between 1900-01-01 and 2999-12-31"]),
    (["report", "--from", "9999-12-31"], ["--from", "between 1900-01-01 and 2999-12-31"]),
    (["injest", "x"], ["No such command 'injest'", "Did you mean 'ingest'"]),
    (["report", "--fromm", "2024-03-04"], ["--fromm", "--from"]),
    (["ingest"], ["Missing argument", "cafe-etl ingest --help"]),
    (["rejects", "--limit", "0"], ["--limit"]),
])
def test_click_usage_mistakes_are_one_line(tmp_path, args, words):
    assert_one_clear_line(run_cli(*args, "--warehouse", tmp_path / "w.duckdb") if args[0] != "injest"
                          else run_cli(*args), 2, *words)


def test_days_relative_to_today_are_dates(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    assert run_cli("ingest", SAMPLES / "canonical", "--warehouse", warehouse).code == 0
    result = run_cli("report", "--warehouse", warehouse, "--from", "today-7", "--to", "yesterday", "--format", "json")
    assert result.code == 0, result.stderr
    period = result.json()["period"]
    today = date.today()
    assert period == {"from": (today - timedelta(days=7)).isoformat(), "to": (today - timedelta(days=1)).isoformat()}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("loaded") / "w.duckdb"
    assert run_cli("ingest", SAMPLES / "canonical", SAMPLES / "dirty", "--warehouse", warehouse).code in (0, 1)
    return warehouse


@pytest.mark.parametrize(("args", "words"), [
    (["rejects", "--reason", "NOT_A_REASON"], ["unknown reason code 'NOT_A_REASON'", "TOTAL_MISMATCH"]),
    (["rejects", "--reason", "TOTAL_MISMACH"], ["unknown reason code", "did you mean TOTAL_MISMATCH"]),
    (["rejects", "--file", "no_such_file.csv"], ["no file in the warehouse matches 'no_such_file.csv'"]),
    (["rejects", "--file", "leeds_01-01-2021_09-00-00.csv"], ["no file", "did you mean leeds_01-01-2020_09-00-00.csv"]),
    (["rejects", "--file", "99999"], ["no file with id 99999"]),
    (["replay", "--branch", "Atlantis"], ["unknown branch 'Atlantis'"]),
    (["replay", "--branch", "Chesterfeld"], ["unknown branch", "did you mean Chesterfield"]),
    (["replay", "--file", "no_such_file.csv"], ["no file in the warehouse matches"]),
    (["report", "--branch", "Atlantis"], ["unknown branch 'Atlantis'"]),
])
def test_a_filter_that_names_nothing_is_a_mistake(loaded, args, words):
    assert_one_clear_line(run_cli(*args, "--warehouse", loaded), 2, *words)


def test_known_filters_still_answer(loaded):
    assert run_cli("rejects", "--reason", "duplicate_row", "--warehouse", loaded, "--format", "json").json()["total"]
    assert run_cli("rejects", "--file", "bradford", "--warehouse", loaded, "--format", "json").json()["total"]


def test_a_replay_with_nothing_to_do_records_no_run(loaded):
    before = query(loaded, "SELECT count(*) FROM etl_run")[0][0]
    result = run_cli("replay", "--branch", "Leeds", "--warehouse", loaded)
    assert result.code == 0 and "nothing to replay" in result.stdout
    assert query(loaded, "SELECT count(*) FROM etl_run")[0][0] == before


def test_a_period_with_no_sales_says_which_days_the_warehouse_holds(loaded):
    result = run_cli("report", "--from", "2024-03-04", "--to", "2024-03-10", "--format", "json", "--warehouse", loaded)
    assert result.code == 0 and result.json()["totals"]["transactions"] == 0  # the contract, on stdout
    first, last = query(loaded, "SELECT min(date), max(date) FROM dim_date d JOIN fact_sale f USING (date_key)")[0]
    assert result.stderr.strip() == (f"note: no sales from 2024-03-04 to 2024-03-10; the warehouse holds sales "
                                     f"from {first} to {last}")


@pytest.mark.parametrize("kind", ["csv", "folder", "empty"])
def test_a_warehouse_path_that_is_no_warehouse_is_named_in_the_users_terms(tmp_path, kind):
    target = {"csv": SAMPLES / "canonical" / "leeds_01-01-2020_09-00-00.csv", "folder": tmp_path,
              "empty": tmp_path / "empty.duckdb"}[kind]
    if kind == "csv":
        target = Path(shutil.copy(target, tmp_path / "leeds.csv"))
    if kind == "empty":
        target.touch()
        os.utime(target, (0, 0))  # not one a loader is creating right now
    before = target.read_bytes() if target.is_file() else None
    words = {"csv": "is a CSV file, not a DuckDB warehouse file", "folder": "is a folder, not a warehouse file",
             "empty": "is an empty file, not a DuckDB warehouse file"}[kind]
    for command in (["ingest", SAMPLES / "canonical"], ["report"], ["status"], ["rejects"]):
        assert_one_clear_line(run_cli(*command, "--warehouse", target), 3, words)
    if before is not None:
        assert target.read_bytes() == before  # nothing was loaded into it, or anywhere else


def test_a_failed_file_gives_exit_status_1_and_others_still_load(tmp_path, landing):
    shutil.copy(SAMPLES / "canonical" / "leeds_01-01-2020_09-00-00.csv", landing)
    (landing / "eight_fields.csv").write_text("a,b,c,d,e,f,g,h\n" * 10)
    (landing / "empty.csv").write_text("")
    result = run_cli("ingest", landing, "--warehouse", tmp_path / "w.duckdb", "--json")
    assert result.code == 1
    outcomes = {f["location"].rsplit("/", 1)[1]: f for f in result.json()["file_results"]}
    assert outcomes["leeds_01-01-2020_09-00-00.csv"]["outcome"] == "loaded"
    assert outcomes["eight_fields.csv"]["outcome"] == "failed"
    assert outcomes["eight_fields.csv"]["error"] == "7 fields expected, found 8 in 100% of rows: not a branch export"
    assert outcomes["empty.csv"]["error"] == "the file is empty"


def test_every_command_has_help():
    for command in ("demo", "generate", "ingest", "validate", "report", "status", "rejects", "replay"):
        result = run_cli(command, "--help")
        assert result.code == 0 and "Usage:" in result.stdout and "--help" in result.stdout


def test_a_file_of_bad_rows_fails_and_its_rows_are_quarantined(tmp_path, landing):
    rows = [f"25/08/2021 09:0{i},Leeds,Ann,Regular Latte - 2.15,9.99,CASH," for i in range(5)]
    (landing / "all_bad.csv").write_text("\n".join(rows) + "\n")
    (landing / "eight_fields.csv").write_text("a,b,c,d,e,f,g,h\n" * 3)
    warehouse = tmp_path / "w.duckdb"
    result = run_cli("ingest", landing, "--warehouse", warehouse, "--json")
    assert result.code == 1
    errors = {f["location"].rsplit("/", 1)[1]: f["error"] for f in result.json()["file_results"]}
    assert errors["all_bad.csv"] == "no loadable row: all 5 rows rejected (TOTAL_MISMATCH 5)"
    quarantined = run_cli("rejects", "--warehouse", warehouse, "--format", "json").json()
    assert quarantined["total"] == 5  # the 8-field file is not a branch export: its rows are not quarantined
    assert {r["location"].rsplit("/", 1)[1] for r in quarantined["rejects"]} == {"all_bad.csv"}
    status = run_cli("status", "--warehouse", warehouse, "--json").json()
    assert status["files_by_status"] == {"failed": 2}
