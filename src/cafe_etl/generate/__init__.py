"""Realistic branch exports for a chain, with the figures they must produce.

``generate(out_dir, branches=N, days=D, seed=S)`` writes one canonical file per
branch and day and ``_expected.json`` beside them. Files are generated in worker
processes; each (branch, day) has its own random stream, so the bytes depend on
the seed only, never on the number of workers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from cafe_etl.generate import effects as planted
from cafe_etl.generate.chain import build_chain
from cafe_etl.generate.day import DayTruth, generate_day
from cafe_etl.generate.truth import ChainTruth

EXPECTED_FILE = "_expected.json"
DEFAULT_START = date(2024, 3, 4)
MAX_BAD_RATE = 0.5


@dataclass(frozen=True)
class GenerateResult:
    out_dir: Path
    files: int
    lines: int
    transactions: int
    rejected: int
    bytes: int
    expected_path: Path


def file_name(slug: str, day: date, opens: int) -> str:
    return f"{slug}_{day.day:02d}-{day.month:02d}-{day.year}_{opens:02d}-00-00.csv"


def _one_file(task: tuple) -> tuple[DayTruth, int]:
    branches, seed, index, day, bad_rate, out_dir, plant = task
    chain = build_chain(branches, seed)
    branch = chain[index]
    others = [b.name for b in chain if b.index != index][:50]
    effects = planted.plan(branches, seed, *plant) if plant else None
    text, truth = generate_day(branch, day, seed, bad_rate, others, effects)
    data = text.encode()
    path = Path(out_dir) / file_name(branch.slug, day, branch.opens)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)  # a watcher never sees a half-written export
    return truth, len(data)


def _tasks(branches: int, days: int, seed: int, start: date, bad_rate: float, out_dir: Path,
           plant: bool) -> Iterator[tuple]:
    period = (start, days) if plant else None
    for offset in range(days):
        for index in range(branches):
            yield branches, seed, index, start + timedelta(days=offset), bad_rate, str(out_dir), period


def generate(
    out_dir: Path,
    *,
    branches: int,
    days: int,
    seed: int,
    start: date = DEFAULT_START,
    bad_rate: float = 0.0,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    plant_trends: bool = False,
) -> GenerateResult:
    """With ``plant_trends``, the last week holds changes of known size (generate/effects.py)."""
    if branches < 1 or days < 1:
        raise ValueError("branches and days must be at least 1")
    if not 0 <= bad_rate <= MAX_BAD_RATE:
        raise ValueError(f"bad rate must be between 0 and {MAX_BAD_RATE}")
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = ChainTruth(start)
    size = 0
    tasks = list(_tasks(branches, days, seed, start, bad_rate, out_dir, plant_trends))
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers == 1 or len(tasks) < 8:
        results = map(_one_file, tasks)
        size = _collect(results, truth, progress)
    else:
        with ProcessPoolExecutor(workers) as pool:
            size = _collect(pool.map(_one_file, tasks, chunksize=8), truth, progress)
    end = start + timedelta(days=days - 1)
    half = start + timedelta(days=days // 2)
    expected = {
        "generator": {"branches": branches, "days": days, "seed": seed, "start": start.isoformat(),
                      "bad_rate": bad_rate, "plant_trends": plant_trends},
        "files": len(tasks),
        "lines": sum(d.lines for d in truth.days),
        "report": truth.report(start, end),
        "later_half": truth.report(half, end),
    }
    if plant_trends:
        names = [b.name for b in build_chain(branches, seed)]
        expected["planted"] = planted.plan(branches, seed, start, days).describe(names)
    expected_path = out_dir / EXPECTED_FILE
    expected_path.write_text(json.dumps(expected, indent=1) + "\n")
    return GenerateResult(
        out_dir=out_dir,
        files=len(tasks),
        lines=expected["lines"],
        transactions=expected["report"]["totals"]["transactions"],
        rejected=expected["report"]["quality"]["rows_rejected"],
        bytes=size,
        expected_path=expected_path,
    )


def _collect(results, truth: ChainTruth, progress) -> int:
    size = 0
    for day_truth, nbytes in results:
        truth.add(day_truth)
        size += nbytes
        if progress:
            progress(1)
    return size
