"""The hostile corpus (tests/fixtures/hostile): every file has its expected outcome,
none produces a traceback, memory stays bounded, and the good files of the same
batch load exactly as they would alone."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import sys
from pathlib import Path

import pytest
from tests.conftest import query, run_cli

from cafe_etl.config import Settings
from cafe_etl.pipeline.run import ingest
from cafe_etl.sources.local import discover

HOSTILE = Path(__file__).resolve().parent / "fixtures" / "hostile"
EXPECTED = json.loads((HOSTILE / "expected.json").read_text())
sys.path.insert(0, str(HOSTILE))
import build  # noqa: E402 - the corpus's own writer, for the files too large to keep

GIB = 1024 * 1024 * 1024


def test_the_corpus_on_disk_is_the_one_the_builder_writes():
    written = build.small_files()
    on_disk = {p.name: p.read_bytes() for p in HOSTILE.glob("*.csv")}
    assert on_disk == written
    assert set(EXPECTED) == set(written)
    assert len(written) + 3 >= 30  # with the three large files build.large_files writes


@pytest.fixture(scope="module")
def batch(generated, tmp_path_factory):
    """Every hostile file, the large ones, a directory symlink loop and a good chain, in one run."""
    folder = tmp_path_factory.mktemp("hostile")
    landing = folder / "landing"
    shutil.copytree(generated, landing)
    for path in HOSTILE.glob("*.csv"):
        shutil.copy(path, landing / path.name)
    build.large_files(landing / "large")
    os.symlink(landing, landing / "loop")  # a directory that contains itself
    warehouse = folder / "w.duckdb"
    result = run_cli("ingest", landing, "--warehouse", warehouse, "--json", timeout=600)
    return result, warehouse


def test_every_hostile_file_has_its_expected_outcome(batch):
    result, _ = batch
    assert result.code == 1  # some files failed, and said so
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    outcomes = {Path(f["location"]).name: f for f in result.json()["file_results"]}
    for name, expected in EXPECTED.items():
        got = outcomes[name]
        assert got["outcome"] == expected["outcome"], name
        assert got["rows_loaded"] == expected["rows_loaded"], name
        assert got["rejects_by_reason"] == expected["rejects"], name
        assert got["error"] == expected.get("error"), name
        assert got["rows_read"] == got["rows_loaded"] + got["rows_rejected"] + got["rows_ignored"], name


def test_the_corpus_has_the_same_outcomes_on_postgresql(tmp_path, postgres_databases):
    url = postgres_databases.create()
    landing = tmp_path / "landing"
    landing.mkdir()
    for path in HOSTILE.glob("*.csv"):
        shutil.copy(path, landing / path.name)
    result = run_cli("ingest", landing, "--warehouse", url, "--json")
    assert result.code == 1 and "Traceback" not in result.stderr
    outcomes = {Path(f["location"]).name: f for f in result.json()["file_results"]}
    for name, expected in EXPECTED.items():
        got = outcomes[name]
        assert (got["outcome"], got["rows_loaded"], got["rejects_by_reason"], got["error"]) == (
            expected["outcome"], expected["rows_loaded"], expected["rejects"], expected.get("error")), name
    assert query(url, "SELECT count(*) FROM etl_file WHERE status = 'loading'") == [(0,)]
    postgres_databases.drop(url)


def test_the_large_files_load_within_bounded_memory(batch):
    result, warehouse = batch
    outcomes = {Path(f["location"]).name: f for f in result.json()["file_results"]}
    assert outcomes["million_rows.csv"]["rows_loaded"] == 1_000_000
    line = outcomes["ten_mb_single_line.csv"]
    assert line["rows_loaded"] == 2 and line["rejects_by_reason"] == {"BAD_ITEM": 1}
    fields = outcomes["hundred_thousand_fields.csv"]
    assert fields["rows_loaded"] == 2 and fields["rejects_by_reason"] == {"BAD_FIELD_COUNT": 1}
    # Once a poison file: item numbers past a SMALLINT stopped every run. Now a reject like any.
    basket = outcomes["basket_of_40000_items.csv"]
    assert basket["rows_loaded"] == 2 and basket["rejects_by_reason"] == {"BAD_ITEM": 1}
    assert query(warehouse, "SELECT detail FROM etl_reject r JOIN etl_file f USING (file_id) "
                            "WHERE f.location LIKE '%basket_of_40000_items.csv'") == [
        ("basket has 40000 items, more than 100",)]
    longest = query(warehouse, "SELECT max(length(row_data)), max(length(detail)) FROM etl_reject")[0]
    assert longest[0] <= 2000 and longest[1] <= 500  # the quarantine keeps the reason, not 10 MB
    # The peak of every child process of this test session so far, the ingest above included.
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 < GIB


def test_the_good_files_of_the_batch_load_exactly(batch, expected):
    _, warehouse = batch
    chain = run_cli("report", "--warehouse", warehouse, "--format", "json").json()
    good = [b for b in chain["branches"] if b["branch"] != "Hostile Town"]
    assert good == expected["report"]["branches"]
    # The directory loop was not followed: nothing was found, or loaded, twice.
    assert query(warehouse, "SELECT count(*) FROM etl_file WHERE location LIKE '%/loop/%'")[0][0] == 0


def test_nothing_hostile_reaches_the_dimensions(batch):
    _, warehouse = batch
    names = [n for (n,) in query(warehouse, "SELECT name FROM dim_product")]
    assert not [n for n in names if n[:1] in "=+@" or any(ch.isdigit() for ch in n)]
    branches = [n for (n,) in query(warehouse, "SELECT name FROM dim_branch")]
    assert not [b for b in branches if "'" in b or ";" in b]
    assert query(warehouse, "SELECT count(*) FROM etl_file")[0][0] > 0  # the SQL in the fields did nothing


def test_a_file_deleted_after_listing_and_an_unreadable_one_fail_alone(generated, tmp_path, monkeypatch):
    from cafe_etl.sources import local

    landing = tmp_path / "landing"
    shutil.copytree(generated, landing)
    files = list(discover(str(landing)))
    gone, locked = files[0], files[1]
    os.unlink(gone.location)
    if os.geteuid() != 0:
        os.chmod(locked.location, 0)
    else:  # root reads any mode: its open() is made to fail as the OS fails it for a mode-000 file
        def denied(path, *args, **kwargs):
            if os.fspath(path) == locked.location:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            return open(path, *args, **kwargs)

        monkeypatch.setattr(local, "open", denied, raising=False)
    warehouse = tmp_path / "w.duckdb"
    summary = ingest([], Settings(warehouse=str(warehouse)), files=files)
    by_location = {f.location: f for f in summary.files}
    assert by_location[gone.location].outcome == "failed" and by_location[gone.location].unreadable
    assert by_location[gone.location].error == f"{gone.location} disappeared before it could be read"
    assert by_location[locked.location].outcome == "failed" and by_location[locked.location].unreadable
    assert by_location[locked.location].error == f"cannot read {locked.location}: Permission denied"
    assert sum(f.outcome == "loaded" for f in summary.files) == len(files) - 2
    status = dict(query(warehouse, "SELECT location, status FROM etl_file"))
    assert status.get(gone.location, "failed") == "failed"
    # Once readable again, the next run loads it.
    if os.geteuid() != 0:
        os.chmod(locked.location, 0o644)
    monkeypatch.undo()
    again = ingest([str(landing)], Settings(warehouse=str(warehouse)))
    assert [f.outcome for f in again.files if f.location == locked.location] == ["loaded"]


def test_rows_differing_by_the_same_swap_twice_are_not_duplicates(tmp_path):
    # A weak 64-bit string hash makes these two rows collide; they are two customers.
    rows = ['05/03/2024 15:55,Big Branch,Customer 1195,"Large Latte - 2.45, Regular Flavoured iced latte - Hazelnut'
            ' - 2.75",5.20,CARD,4000000000001195',
            '05/03/2024 15:55,Big Branch,Customer 1915,"Large Latte - 2.45, Regular Flavoured iced latte - Hazelnut'
            ' - 2.75",5.20,CARD,4000000000001915']
    path = tmp_path / "big_branch_05-03-2024_09-00-00.csv"
    path.write_text("\n".join(rows) + "\n")
    result = run_cli("ingest", path, "--warehouse", tmp_path / "w.duckdb", "--json")
    assert result.json()["file_results"][0]["rows_loaded"] == 2


def _big_file(path: Path, ending: str = "\n", count: int = 260_000) -> None:
    """A file past the streaming threshold (32 MiB) with bad rows at known lines."""
    rows = []
    for n in range(count):
        rows.append(build.row(n % 60, name=f"Customer {n}").replace(" 09:", f" {8 + n // 60 % 12:02d}:"))
    rows[0] = "Date,Branch,Customer,Basket,Total,Payment,Card"
    rows[1000] = rows[999]  # a repeat: DUPLICATE_ROW at line 1001
    rows[5000] = ""  # a blank line
    rows[77_777] = rows[77_777].replace("5.20", "5.21")  # TOTAL_MISMATCH at line 77,778
    rows[-1] = rows[-1].replace("CARD", "BITCOIN")  # BAD_PAYMENT on the last line
    path.write_text(ending.join(rows) + ending, newline="")


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_a_large_file_read_line_by_line_gives_what_a_whole_read_gives(tmp_path, monkeypatch, ending):
    from cafe_etl.pipeline import batch as batches

    path = tmp_path / "hostile_town_05-03-2024_09-00-00.csv"
    _big_file(path, ending)
    assert path.stat().st_size > batches.STREAM_FROM

    def run(name: str):
        warehouse = tmp_path / f"{name}.duckdb"
        summary = ingest([str(path)], Settings(warehouse=str(warehouse), customer_keys=False))
        rejects = query(warehouse, "SELECT source_row, reason_code FROM etl_reject ORDER BY source_row")
        return summary.files[0], rejects

    streamed, streamed_rejects = run("streamed")
    monkeypatch.setattr(batches, "STREAM_FROM", 1 << 40)  # the same file, read whole
    whole, whole_rejects = run("whole")
    assert streamed.format != whole.format or streamed.format.endswith("lf")  # both describe the same file
    for field in ("rows_read", "rows_loaded", "rows_rejected", "rows_ignored", "items_loaded", "rejects_by_reason"):
        assert getattr(streamed, field) == getattr(whole, field), field
    assert streamed_rejects == whole_rejects == [(1001, "DUPLICATE_ROW"), (77_778, "TOTAL_MISMATCH"),
                                                 (260_000, "BAD_PAYMENT")]
    assert streamed.rows_ignored == 2  # the header and the blank line


def test_a_file_too_large_for_the_memory_limit_fails_alone(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    _big_file(landing / "hostile_town_05-03-2024_09-00-00.csv", count=700_000)  # about 95 MB
    shutil.copy(HOSTILE / "bom.csv", landing / "bom.csv")
    result = run_cli("ingest", landing, "--warehouse", tmp_path / "w.duckdb", "--json",
                     env={"CAFE_ETL_MEMORY_LIMIT": "128MB"})
    assert result.code == 1 and "Traceback" not in result.stderr
    outcomes = {Path(f["location"]).name: f for f in result.json()["file_results"]}
    assert outcomes["bom.csv"]["outcome"] == "loaded"
    big = outcomes["hostile_town_05-03-2024_09-00-00.csv"]
    assert big["outcome"] == "failed"
    assert "too large to process within the engine's memory limit (128MB)" in big["error"]


def test_validate_also_fails_a_file_too_large_for_memory_alone(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    _big_file(landing / "hostile_town_05-03-2024_09-00-00.csv", count=700_000)
    shutil.copy(HOSTILE / "bom.csv", landing / "bom.csv")
    result = run_cli("validate", landing, "--json", env={"CAFE_ETL_MEMORY_LIMIT": "128MB"})
    assert result.code == 1 and "Traceback" not in result.stderr
    problems = result.json()["problems"]
    assert [p["reason"] for p in problems if p["location"].endswith("09-00-00.csv")] == ["FILE_FAILED"]
    assert not [p for p in problems if p["location"].endswith("bom.csv")]
