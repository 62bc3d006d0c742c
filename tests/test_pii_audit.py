"""The PII audit: every sample and hostile file, with their known names and card
numbers, leaves no card number (audit) and none of those exact strings (direct scan)
in any text column, in the quarantine, or in the log of a full run."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from tests.conftest import BACKENDS, copy_samples, new_warehouse, run_cli, text_values

from cafe_etl.analytics.audit import card_numbers, luhn_valid

HOSTILE = Path(__file__).resolve().parent / "fixtures" / "hostile"


def test_luhn_and_the_number_finder():
    assert luhn_valid("4111111111111111") and luhn_valid("5500005555555559") and not luhn_valid("4111111111111112")
    found = list(card_numbers("paid 4111 1111 1111 1111 and 5500-0055-5555-5559, ref 1234567890123, 25/08/2021"))
    assert found == ["4111111111111111", "5500005555555559"]
    assert list(card_numbers("a 12-digit 411111111111 and a 20-digit 41111111111111111111")) == []


def _inputs(folder: Path) -> tuple[set[str], set[str]]:
    """The personal data of every input file: card numbers anywhere, and the customer
    names of rows written in the canonical layout."""
    cards, names = set(), set()
    for path in folder.rglob("*.csv"):
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        cards |= set(card_numbers(text))
        lines = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
        for line in lines:
            row = next(csv.reader(io.StringIO(line)), [])
            if len(row) == 7 and len(row[2].strip()) >= 5 and " " in row[2].strip():
                names.add(row[2].strip())
    return cards, names


_WORDS = re.compile(rb"[^\x00-\x20,;\"|]+(?: [^\x00-\x20,;\"|]+)+")


def leaks(blob: bytes, cards: set[str], names: set[str]) -> set[str]:
    """The known card numbers and names found anywhere in ``blob`` (raw bytes, UTF-8):
    every run of 12-19 digits, and every run of two to four words, looked up in the
    sets (a regular expression of thousands of names would take minutes)."""
    found = {m.decode() for m in re.findall(rb"(?<!\d)\d{12,19}(?!\d)", blob)} & cards
    wanted = {n.encode() for n in names}
    for match in _WORDS.finditer(blob):
        words = match.group().split(b" ")
        for start in range(len(words)):
            for end in range(start + 2, min(len(words), start + 4) + 1):
                if b" ".join(words[start:end]) in wanted:
                    found.add(b" ".join(words[start:end]).decode("utf-8", "replace"))
    return found


@pytest.fixture(scope="module", params=BACKENDS)
def everything(request, generated, tmp_path_factory, postgres_databases):
    folder = tmp_path_factory.mktemp(f"pii-{request.param}")
    landing = folder / "landing"
    copy_samples(landing / "samples")
    shutil.copytree(HOSTILE, landing / "hostile", ignore=shutil.ignore_patterns("*.py", "*.json", "__pycache__"))
    shutil.copytree(generated, landing / "generated")
    url = new_warehouse(request.param, folder, postgres_databases)
    started = time.time()
    result = run_cli("ingest", landing, "--warehouse", url)
    assert result.code == 1 and "Traceback" not in result.stderr  # hostile files fail, the rest load
    log = folder / "ingest.log"
    log.write_text(result.stdout + result.stderr)
    yield Everything(url, landing, log, started)
    postgres_databases.drop(url)


@dataclass
class Everything:
    url: str
    landing: Path
    log: Path
    started: float

    def __iter__(self):  # url, landing, log
        return iter((self.url, self.landing, self.log))


def test_the_audit_finds_no_card_number(everything):
    url, _, log = everything
    result = run_cli("audit", "--warehouse", url, "--file", log, "--json")
    assert result.code == 0, result.stdout
    body = result.json()
    assert body["findings"] == [] and body["columns_scanned"] >= 15 and body["files_scanned"] == 1


def test_no_known_name_or_card_number_is_stored(everything):
    url, landing, _ = everything
    cards, names = _inputs(landing)
    assert len(cards) > 100 and len(names) > 100  # the inputs do carry personal data
    stored = "\n".join(text_values(url))
    digits_only = "".join(ch for ch in stored if ch.isdigit() or ch == "\n")
    assert not [c for c in cards if c in stored or c in digits_only]
    assert not [n for n in names if n in stored]


def test_the_audit_reports_a_planted_number_without_printing_it(tmp_path, generated):
    warehouse = tmp_path / "w.duckdb"
    assert run_cli("ingest", generated, "--warehouse", warehouse).code == 0
    with duckdb.connect(str(warehouse)) as con:
        con.execute("UPDATE etl_reject SET detail = 'paid with 4111 1111 1111 1111' "
                    "WHERE source_row = (SELECT min(source_row) FROM etl_reject)")
    result = run_cli("audit", "--warehouse", warehouse)
    assert result.code == 1
    assert "etl_reject.detail: a card-like number ending 1111" in result.stdout
    assert "4111 1111 1111 1111" not in result.stdout and "4111111111111111" not in result.stdout
    planted = tmp_path / "export.log"
    planted.write_text("ok\nrow 5500-0055-5555-5559 leaked\n")
    result = run_cli("audit", "--warehouse", warehouse, "--file", planted, "--json")
    assert {"where": f"{planted}:2", "last4": "5559"} in result.json()["findings"]


def test_the_log_of_a_watch_service_holds_no_personal_data(generated, tmp_path):
    landing = tmp_path / "landing"
    copy_samples(landing / "samples")
    shutil.copytree(generated, landing / "generated")
    warehouse = tmp_path / "w.duckdb"
    process = subprocess.Popen([sys.executable, "-m", "cafe_etl.cli", "watch", str(landing), "--warehouse",
                                str(warehouse), "--interval", "0.5", "--settle", "0", "--log-format", "json"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if '"event":"ingested"' in line:
            break
    process.send_signal(signal.SIGTERM)
    try:
        rest, _ = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # every thread's stack, for the failure report
        rest, _ = process.communicate(timeout=30)
        pytest.fail(f"watch did not stop on SIGTERM:\n{rest}")
    log = tmp_path / "watch.log"
    log.write_text("".join(lines) + rest)
    assert '"event":"file"' in log.read_text()
    cards, names = _inputs(landing)
    text = log.read_text()
    assert not [c for c in cards if c in text] and not [n for n in names if n in text]
    assert run_cli("audit", "--warehouse", warehouse, "--file", log).code == 0


def _stored_bytes(everything: Everything, tmp_path: Path) -> bytes:
    """The warehouse as it lies on disk, with its write-ahead log.

    DuckDB: the file, and the WAL of a second load killed mid-run (a finished run
    checkpoints the WAL away). PostgreSQL: every relation file of the database after a
    CHECKPOINT, and the WAL segments written since the load began, read by the server."""
    if everything.url.startswith("duckdb"):
        path = everything.url.removeprefix("duckdb:///")
        killed = tmp_path / "killed.duckdb"
        loader = subprocess.Popen([sys.executable, "-m", "cafe_etl.cli", "ingest", str(everything.landing),
                                   "--warehouse", str(killed), "--log-format", "json"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for n, _ in enumerate(ln for ln in loader.stderr if '"event":"file"' in ln):
            if n == 20:
                loader.kill()
                break
        loader.wait()
        wal = Path(f"{killed}.wal")
        assert wal.stat().st_size > 100_000  # the WAL holds the loaded batches' rows
        return Path(path).read_bytes() + wal.read_bytes() + killed.read_bytes()
    import psycopg

    with psycopg.connect(everything.url, autocommit=True) as con:
        con.execute("CHECKPOINT")
        files = [p for (p,) in con.execute(
            "SELECT pg_relation_filepath(oid) FROM pg_class WHERE relkind IN ('r', 't', 'i', 'm') "
            "AND pg_relation_filepath(oid) IS NOT NULL")]
        blob = b"".join(con.execute("SELECT pg_read_binary_file(%s::text)", [p]).fetchone()[0] or b"" for p in files)
        segments = [name for (name,) in con.execute(
            "SELECT name FROM pg_ls_waldir() WHERE modification >= to_timestamp(%s) - interval '5 seconds'",
            [everything.started])]
        assert segments
        for name in segments:
            blob += con.execute("SELECT pg_read_binary_file(%s::text)", [f"pg_wal/{name}"]).fetchone()[0]
    return blob


def test_no_known_name_or_card_number_lies_in_the_stored_bytes(everything, tmp_path):
    cards, names = _inputs(everything.landing)
    blob = _stored_bytes(everything, tmp_path)
    assert len(blob) > 1_000_000
    assert leaks(blob, cards, names) == set()
    # The scanner finds what it looks for: the inputs themselves are full of it.
    sample = (everything.landing / "generated").glob("*.csv")
    assert len(leaks(next(sample).read_bytes(), cards, names)) > 10


def test_no_api_response_or_page_holds_a_known_name_or_card_number(everything):
    from fastapi.testclient import TestClient

    from cafe_etl.config import Settings
    from cafe_etl.web.app import create_app

    cards, names = _inputs(everything.landing)
    with TestClient(create_app(Settings(warehouse=everything.url))) as client:
        meta = client.get("/api/meta").json()
        paths = [p for p, ops in client.app.openapi()["paths"].items() if "get" in ops and "{" not in p]
        bodies = []
        for path in paths + ["/", "/what", "/where", "/when", "/customers", "/operations", "/metrics"]:
            for params in ({}, {"branch": meta["branches"][0]}, {"limit": 500}):
                response = client.get(path, params=params)
                assert response.status_code in (200, 400), (path, params, response.status_code)
                bodies.append(response.content)
        for reason in ("BAD_FIELD_COUNT", "BAD_ITEM", "DUPLICATE_ROW", "BRANCH_MISMATCH", "BAD_TIMESTAMP"):
            bodies.append(client.get("/api/ops/reject-rows", params={"reason": reason, "limit": 500}).content)
    blob = b"\n".join(bodies)
    assert len(paths) >= 20 and blob.count(b'"reason":') > 100  # the quarantine's rows were among them
    assert leaks(blob, cards, names) == set()


def test_the_engine_never_writes_a_spill_file(tmp_path, generated):
    """The engine runs out of memory rather than spill: what it holds mid-batch includes
    names and card numbers. A starved run leaves no file behind, anywhere it could write."""
    from cafe_etl.engine import EnginePool

    with EnginePool(workers=2, threads=1, memory_limit="64MB") as pool:
        assert pool.db.execute("SELECT current_setting('temp_directory')").fetchone()[0] == ""
    scratch, work = tmp_path / "tmp", tmp_path / "cwd"
    scratch.mkdir()
    work.mkdir()
    warehouse = tmp_path / "w.duckdb"
    result = run_cli("ingest", generated, "--warehouse", warehouse, cwd=work,
                     env={"TMPDIR": str(scratch), "CAFE_ETL_MEMORY_LIMIT": "48MB", "CAFE_ETL_BATCH_BYTES": "4000000"})
    assert result.code in (0, 1) and "Traceback" not in result.stderr
    assert list(scratch.rglob("*")) == [] and list(work.rglob("*")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "tmp", "w.duckdb"]
