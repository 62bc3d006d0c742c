"""Shared fixtures: an isolated customer-key secret, the real CLI, sample and generated data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = FIXTURES / "samples"
# The installed console script, as a user runs it.
_SCRIPT = Path(sys.executable).parent / "cafe-etl"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cafe_etl.cli"]


@pytest.fixture(autouse=True, scope="session")
def _isolated_key(tmp_path_factory):
    """Every test process (and CLI subprocess) uses a throwaway customer-key secret."""
    key = tmp_path_factory.mktemp("key") / "customer-key"
    os.environ["CAFE_ETL_KEY_FILE"] = str(key)
    os.environ.pop("CAFE_ETL_WAREHOUSE", None)
    yield key


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> Result:
    """Run the real ``cafe-etl`` command line in a subprocess."""
    proc = subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def warehouse(tmp_path) -> Path:
    return tmp_path / "warehouse.duckdb"


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Path:
    """A small chain with bad rows of every kind, generated once, read-only for tests."""
    out = tmp_path_factory.mktemp("generated") / "landing"
    result = run_cli("generate", out, "--branches", 9, "--days", 6, "--seed", 11, "--bad-rate", 0.04)
    assert result.code == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def expected(generated) -> dict:
    return json.loads((generated / "_expected.json").read_text())


@pytest.fixture
def landing(tmp_path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def copy_samples(dest: Path) -> list[Path]:
    shutil.copytree(SAMPLES, dest, dirs_exist_ok=True)
    return sorted(dest.rglob("*.csv"))
