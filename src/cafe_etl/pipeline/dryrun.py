"""The dry run behind ``cafe-etl validate``: every check ``ingest`` makes, loading nothing.

Batches go through the same engine stages, scheduling and settle policy as an ingest;
instead of being loaded, each file's verdict and its rejected rows are listed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import closing

from cafe_etl import keys
from cafe_etl.config import Settings
from cafe_etl.engine import Engine
from cafe_etl.pipeline import large
from cafe_etl.pipeline.batch import Judged, ReadFile, judge, outcome_of, record_of, too_big
from cafe_etl.pipeline.reading import BatchReader
from cafe_etl.pipeline.results import Problem, RunSummary
from cafe_etl.pipeline.schedule import Progress, engine_pool, run_batches
from cafe_etl.pipeline.settle import file_name, settle, transforming
from cafe_etl.sources import LandingFile, discover


def dry_run(
    specs: Sequence[str], settings: Settings, *, progress: Progress | None = None,
    files: Sequence[LandingFile] | None = None,
) -> tuple[RunSummary, list[Problem]]:
    """The same checks as ``ingest``, loading nothing: every problem, file by file and row by row."""
    started = time.perf_counter()
    files = discover(specs, settings.s3_endpoint_url) if files is None else files
    summary = RunSummary(command="validate", warehouse="(none)")
    problems: list[Problem] = []
    secret = keys.secret_for(settings)

    def check(engine: Engine, batch: list[ReadFile]) -> list[tuple[Judged, list[Problem]]]:
        policy = {
            "engine": engine, "memory": pool.memory,
            "give_up": lambda read, why: (Judged(read, None, None, why), []),
            "too_big": lambda read: too_big(read.size, settings),
            "name": lambda read: file_name(read.source.location), "verb": "checked",
        }
        sliced = [f for f in batch if large.can_slice(f, settings)]
        found = []
        for read in sliced:
            found += settle([read], lambda one: [_check_sliced(engine, one[0], settings, secret)], **policy)
        whole = [f for f in batch if f not in sliced]
        if whole:
            found += settle(whole, lambda part: _check_batch(engine, part, settings, secret), **policy)
        return found

    with engine_pool(settings) as pool, closing(BatchReader(files, settings.batch_bytes)) as reader:
        checked, _ = run_batches(pool, iter(reader), progress, check)
    for j, rows in (pair for batch in checked for pair in batch):
        problems.extend(rows)
        summary.files.append(outcome_of(j, record_of(j, None, None, 0.0), loaded_as="valid"))
        if j.failure:
            problems.append(Problem(j.read.source.location, None, "FILE_FAILED", j.failure))
    summary.files.sort(key=lambda f: f.location)
    summary.seconds = time.perf_counter() - started
    problems.sort(key=lambda p: (p.location, p.line or 0))
    return summary, problems


_REJECTS = "SELECT idx, line_no, reason, detail FROM stg_check WHERE outcome = 'reject'"


def _check_batch(engine: Engine, batch: Sequence[ReadFile], settings: Settings,
                 secret: bytes | None) -> list[tuple[Judged, list[Problem]]]:
    with transforming():
        judged = judge(engine, list(batch), settings, secret)
        rows = engine.rows(_REJECTS)
    by_idx: dict[int, list[Problem]] = {}
    location = {j.idx: j.read.source.location for j in judged if j.idx is not None}
    for idx, line, reason, detail in rows:
        by_idx.setdefault(idx, []).append(Problem(location[idx], line, reason, detail))
    return [(j, by_idx.get(j.idx, [])) for j in judged]


def _check_sliced(engine: Engine, read: ReadFile, settings: Settings,
                  secret: bytes | None) -> tuple[Judged, list[Problem]]:
    found: list[Problem] = []  # kept only once the whole file is judged

    def collect() -> None:
        found.extend(Problem(read.source.location, line, reason, detail)
                     for _, line, reason, detail in engine.rows(_REJECTS))

    with transforming():
        judged = large.judge(engine, read, settings, secret, each_slice=collect)
    return judged, found
