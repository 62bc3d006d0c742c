"""The README is part of the interface: its commands and options must exist."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_quickstart_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    assert "make demo" in README and "make test" in README
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def _documented_commands() -> dict[str, set[str]]:
    commands: dict[str, set[str]] = {}
    for line in README.splitlines():
        match = re.match(r"\| `cafe-etl (\w+)([^`]*)`", line)
        if match:
            commands[match.group(1)] = set(re.findall(r"--[a-z-]+", match.group(2)))
    return commands


def test_every_documented_command_and_option_exists():
    from cafe_etl.cli import main

    commands = _documented_commands()
    assert set(commands) == set(main.commands)  # every command documented, nothing documented that is not one
    assert {"demo", "ingest", "report", "customers", "together"} <= set(commands)
    for command, options in commands.items():
        help_text = run_cli(command, "--help").stdout
        for option in options:
            assert option in help_text, (command, option)


def test_the_code_passes_the_linter():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        if os.environ.get("CI"):
            pytest.fail("ruff is not installed (the [dev] extra installs it): the linter must run on CI")
        pytest.skip("ruff is not installed")
    result = subprocess.run([ruff, "check", "src", "tests", "bench", "deploy"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout


def _quickstart_examples() -> list[list[str]]:
    block = README.split("Then, for example:", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [shlex.split(line)[1:] for line in block.strip().splitlines()]


def test_the_quickstart_examples_answer_on_the_data_make_demo_generates(tmp_path):
    """`make demo` is `cafe-etl demo`: its defaults (data/landing, data/warehouse.duckdb)."""
    assert run_cli("demo", "--no-serve", cwd=tmp_path, timeout=600).code == 0
    examples = _quickstart_examples()
    assert examples[0][0] == "report" and "--branch" in examples[0]
    for args in examples:
        result = run_cli(*args, cwd=tmp_path)
        assert result.code == 0 and result.stderr == "", (args, result.stderr)  # no error, no "no sales" note
    first = run_cli(*examples[0], "--format", "json", cwd=tmp_path).json()
    assert first["totals"]["transactions"] > 0 and [b["branch"] for b in first["branches"]] == ["Banbury"]
