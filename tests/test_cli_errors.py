"""User mistakes: one clear line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

import shutil

import pytest
from tests.conftest import SAMPLES, run_cli


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


def test_bad_date_option_is_explained(tmp_path):
    result = run_cli("report", "--warehouse", tmp_path / "w.duckdb", "--from", "10/03/2024")
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "'10/03/2024' does not match the format '%Y-%m-%d'" in result.stderr


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
