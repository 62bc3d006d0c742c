"""The PII audit: every sample and hostile file, with their known names and card
numbers, leaves no card number (audit) and none of those exact strings (direct scan)
in any text column, in the quarantine, or in the log of a full run."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import time
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


@pytest.fixture(scope="module", params=BACKENDS)
def everything(request, generated, tmp_path_factory, postgres_databases):
    folder = tmp_path_factory.mktemp(f"pii-{request.param}")
    landing = folder / "landing"
    copy_samples(landing / "samples")
    shutil.copytree(HOSTILE, landing / "hostile", ignore=shutil.ignore_patterns("*.py", "*.json", "__pycache__"))
    shutil.copytree(generated, landing / "generated")
    url = new_warehouse(request.param, folder, postgres_databases)
    result = run_cli("ingest", landing, "--warehouse", url)
    assert result.code == 1 and "Traceback" not in result.stderr  # hostile files fail, the rest load
    log = folder / "ingest.log"
    log.write_text(result.stdout + result.stderr)
    yield url, landing, log
    postgres_databases.drop(url)


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
