"""bench/breakdown.py reaches into the pipeline's statement runners: it must keep
finding them, time the real ingest, and account for the process's CPU time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_breakdown_times_every_stage_of_a_real_ingest(generated, expected, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "breakdown.py"), str(generated),
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    head, *lines = result.stdout.strip().splitlines()
    loaded = expected["report"]["totals"]["transactions"]
    assert head.startswith(f"{loaded:,} transactions from {expected['files']:,} files")
    cpu = float(re.search(r"([\d.]+) CPU seconds", head).group(1))
    stages = {m.group(3): float(m.group(1)) for m in (re.match(r"\s*([\d.]+) s\s+([\d.]+)%\s+(.+)", line)
                                                      for line in lines)}
    for stage in ("lines: cut into fields, timestamps, customer identity",
                  "customer keys: HMAC-SHA256 per distinct customer", "baskets and items",
                  "row checks and per-file counts", "staging the warehouse rows",
                  "warehouse: facts, rejects, aggregates, ledger", "warehouse: commits",
                  "reading and fingerprinting the files (own thread)"):
        assert stages[stage] > 0, stage
    # Every CPU second is in a stage or in "the rest"; the rounding of each line aside.
    assert abs(sum(stages.values()) - cpu) <= 0.01 * len(stages) + 0.05
    assert not list(tmp_path.glob("**/*.duckdb")), "the scratch warehouse is removed"
