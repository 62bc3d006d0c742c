"""Runs that load: ``ingest`` (discover, plan with the ledger, process, load) and ``replay``.

Files are read in size-bounded batches ahead of the engines (``reading``). Each
batch is planned against the ledger (what is new, changed, a copy, unchanged) and
claimed, then transformed by one of the pool's engines while the other engine works
on another batch (``schedule``); a batch that cannot be finished is settled by
``settle``. Ledger changes are made one at a time; each batch is loaded in one
transaction, so every file is either wholly in the warehouse or not at all. The dry
run, with the same checks and no load, is ``dryrun``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from typing import Protocol

from cafe_etl import keys
from cafe_etl.config import Settings
from cafe_etl.engine import Engine, MemoryGate
from cafe_etl.pipeline import large, ledger, stage
from cafe_etl.pipeline.batch import Judged, ReadFile, outcome_of, record_of, too_big, transform_batch
from cafe_etl.pipeline.reading import BatchReader
from cafe_etl.pipeline.results import FileOutcome, RunSummary
from cafe_etl.pipeline.schedule import Progress, StopRequested, engine_pool, run_batches
from cafe_etl.pipeline.settle import file_name, settle, transforming
from cafe_etl.rules import FileStatus, RunStatus
from cafe_etl.sources import LandingFile, discover
from cafe_etl.warehouse import open_warehouse
from cafe_etl.warehouse.base import FileRecord, LedgerEntry, LoadSession, NewFile, PartLoad

BatchDone = Callable[[list[FileOutcome]], None]  # each batch's outcomes, as soon as it is settled
BatchClaimed = Callable[[list[str]], None]  # the locations a batch claimed, before it is processed


def _new_file(f: ReadFile) -> NewFile:
    return NewFile(f.source.location, f.sha256, f.size or f.source.size, f.source.etag)


@dataclass
class _Work:
    """One batch after planning: what to process, under which ledger ids."""

    process: list[ledger.Planned]
    unreadable: list[tuple[ReadFile, int]]


def _plan(session: LoadSession, batch: list[ReadFile], run_id: int, summary: RunSummary,
          redo: frozenset[int]) -> _Work:
    """Decide each file's fate with the ledger and claim the versions to process (DESIGN §4)."""
    readable = [f for f in batch if not f.unreadable]
    unreadable = [f for f in batch if f.unreadable]
    with session.ledger_transaction():
        known = session.lookup([_new_file(f) for f in batch])
        decision = ledger.plan(readable, known, run_id, redo)
        session.take_over(decision.taken_over, run_id)
        fresh = [p for p in decision.process if p.file_id is None]
        for p, file_id in zip(fresh, session.claim([_new_file(p.read) for p in fresh], run_id), strict=True):
            p.file_id = file_id
        ids_by_read = {id(p.read): p.file_id for p in decision.process}
        copies = [(f, original if isinstance(original, int) else ids_by_read[id(original)])
                  for f, original in decision.copies]
        session.record_copies([(_new_file(f), original) for f, original in copies], run_id)
        unreadable_ids = _claim_unreadable(session, unreadable, known, run_id)
    for f, entry in decision.unchanged:
        summary.files.append(FileOutcome(f.source.location, "unchanged", entry.file_id, bytes=f.size,
                                         seconds=f.seconds, ledger_status=entry.status))
    for f, entry in decision.elsewhere:
        summary.files.append(FileOutcome(f.source.location, "elsewhere", entry.file_id, bytes=f.size,
                                         seconds=f.seconds, ledger_status=entry.status))
    for f, original in copies:
        summary.files.append(FileOutcome(f.source.location, "copy", copy_of=original, bytes=f.size,
                                         seconds=f.seconds, ledger_status=FileStatus.SKIPPED))
    return _Work(decision.process, unreadable_ids)


def _claim_unreadable(session: LoadSession, files: list[ReadFile], known: list[LedgerEntry],
                      run_id: int) -> list[tuple[ReadFile, int]]:
    """Files that could not be read are still recorded as failed, under an empty content hash."""
    existing = {e.location: e.file_id for e in known if e.sha256 == ""}
    fresh = [f for f in files if f.source.location not in existing]
    ids = dict(zip((f.source.location for f in fresh), session.claim([_new_file(f) for f in fresh], run_id),
                   strict=True))
    return [(f, existing.get(f.source.location) or ids[f.source.location]) for f in files]


class LocalExecutor:
    """Batches transformed by the run's own engines (the default executor)."""

    concurrency: int | None = None  # the engine pool's own choice

    def __init__(self, settings: Settings, secret: bytes | None) -> None:
        self._settings, self._secret = settings, secret

    def transform(self, engine: Engine, files: list[ReadFile], file_ids: dict[int, int]) -> list[Judged]:
        return transform_batch(engine, files, file_ids, self._settings, self._secret)


class Executor(Protocol):
    concurrency: int | None

    def transform(self, engine: Engine, files: list[ReadFile], file_ids: dict[int, int]) -> list[Judged]: ...


@contextmanager
def executor_for(settings: Settings, secret: bytes | None) -> Iterator[Executor]:
    """Where this run's batches are transformed (``settings.executor``)."""
    if settings.executor == "spark":
        from cafe_etl.pipeline.spark import spark_executor

        with spark_executor(settings, secret) as executor:
            yield executor
    else:
        yield LocalExecutor(settings, secret)


@dataclass
class _Loading:
    """What every batch of one ingest run works with."""

    session: LoadSession
    # The session's own connection (ledger lookups, claims, run records) serves one
    # engine at a time; loads go through each engine's connection.
    ledger_lock: threading.Lock
    memory: MemoryGate
    settings: Settings
    secret: bytes | None
    run_id: int
    executor: Executor


def _process(engine: Engine, run: _Loading, work: _Work) -> list[FileOutcome]:
    """Transform one planned batch on ``engine``, then load it; a large file goes alone, in
    slices. A batch that cannot be finished is settled by ``settle``'s one policy: retried
    alone, split, or narrowed down to the one file that fails."""
    settings = run.settings
    outcomes = _record_failures(engine, run, [_failure(f, file_id, f.error) for f, file_id in work.unreadable])
    policy = {
        "engine": engine, "memory": run.memory,
        "give_up": lambda p, why: _give_up(engine, run, p, why),
        "too_big": lambda p: too_big(p.read.size, settings),
        "name": lambda p: file_name(p.read.source.location),
    }
    sliced = [p for p in work.process if large.can_slice(p.read, settings)]
    for planned in sliced:
        outcomes += settle([planned], lambda one: [_load_sliced(engine, run, one[0])], **policy)
    whole = [p for p in work.process if p not in sliced]
    if whole:
        outcomes += settle(whole, lambda batch: _load_batch(engine, run, batch), **policy)
    return outcomes


def _load_batch(engine: Engine, run: _Loading, batch: Sequence[ledger.Planned]) -> list[FileOutcome]:
    """Judge and stage the batch, then load it in one transaction."""
    started = time.perf_counter()
    with transforming():
        judged = run.executor.transform(engine, [p.read for p in batch], {i: p.file_id for i, p in enumerate(batch)})
    transform = time.perf_counter() - started
    total = sum(j.read.size for j in judged) or 1
    records = [record_of(j, p.file_id, p.replaces, transform * j.read.size / total, p.clear)
               for j, p in zip(judged, batch, strict=True)]
    started = time.perf_counter()
    run.session.load(engine, records, run.run_id)
    load = time.perf_counter() - started
    with run.ledger_lock:
        run.session.record_load_seconds([(r.file_id, load * j.read.size / total)
                                         for r, j in zip(records, judged, strict=True)])
    return [outcome_of(j, r) for r, j in zip(records, judged, strict=True)]


def _load_sliced(engine: Engine, run: _Loading, planned: ledger.Planned) -> FileOutcome:
    """One large file, judged and loaded slice by slice in one warehouse transaction."""
    started = time.perf_counter()
    read, session = planned.read, run.session
    with session.load_parts(engine, planned.file_id, run.run_id, clear_first=planned.clear) as parts:
        with transforming():
            judged = large.judge(engine, read, run.settings, run.secret,
                                 each_slice=lambda: _load_slice(engine, parts, planned.file_id))
        record = record_of(judged, planned.file_id, planned.replaces, time.perf_counter() - started, planned.clear)
        if judged.failure is None or judged.keeps_rejects:
            parts.finish(record)
            return outcome_of(judged, record)
    # Nothing of it is kept (its transaction rolled back): its failure is recorded alone.
    return _record_failures(engine, run, [(judged, record)])[0]


def _give_up(engine: Engine, run: _Loading, planned: ledger.Planned, why: str) -> FileOutcome:
    """The file cannot be processed: recorded as failed with ``why``, nothing of it loaded."""
    failed = _failure(planned.read, planned.file_id, why, planned.replaces, planned.clear)
    return _record_failures(engine, run, [failed])[0]


def _failure(read: ReadFile, file_id: int, why: str, replaces: int | None = None,
             clear: bool = False) -> tuple[Judged, FileRecord]:
    """A file that loads nothing, judged and recorded as failed with ``why``."""
    judged = Judged(read, None, None, why)
    return judged, record_of(judged, file_id, replaces, 0.0, clear)


def _record_failures(engine: Engine, run: _Loading, failed: list[tuple[Judged, FileRecord]]) -> list[FileOutcome]:
    """Ledger rows for files that load nothing, written by a load of an empty batch."""
    if not failed:
        return []
    with transforming():
        transform_batch(engine, [], {}, run.settings, run.secret)
    run.session.load(engine, [record for _, record in failed], run.run_id)
    engine.reset()
    return [outcome_of(j, record) for j, record in failed]


def _load_slice(engine: Engine, parts: PartLoad, file_id: int) -> None:
    stage.stage(engine, [(1, file_id, True, True)])
    parts.add(engine)


def ingest(
    specs: Sequence[str], settings: Settings, *, command: str = "ingest", progress: Progress | None = None,
    files: Sequence[LandingFile] | None = None, redo: frozenset[int] = frozenset(),
    stop_requested: StopRequested | None = None, batch_done: BatchDone | None = None,
    batch_claimed: BatchClaimed | None = None, executor: Executor | None = None,
) -> RunSummary:
    """Load every new or changed export named by ``specs`` (or the given ``files``).

    ``redo``: ledger ids of versions to process again even though they are done.
    ``stop_requested``: when it turns true, no further batch is started; the files of
    the batches left are not claimed, so the next run takes them.
    ``executor``: where batches are transformed; by default ``settings.executor``'s."""
    started = time.perf_counter()
    files = discover(specs, settings.s3_endpoint_url) if files is None else files
    warehouse = open_warehouse(settings.warehouse, lock_wait=settings.lock_wait)
    secret = keys.secret_for(settings)
    summary = RunSummary(command=command, warehouse=warehouse.describe())
    reader = BatchReader(files, settings.batch_bytes)
    with ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(executor_for(settings, secret))
        stack.enter_context(closing(reader))
        pool = stack.enter_context(engine_pool(settings, executor.concurrency))
        session = stack.enter_context(warehouse.load_session(pool))
        session.recategorise()  # an edited categories file applies from this run, loads or not
        summary.run_id = run_id = session.start_run(command)
        run = _Loading(session, threading.Lock(), pool.memory, settings, secret, run_id, executor)
        try:
            _, summary.stopped = run_batches(pool, iter(reader), progress, lambda engine, batch: _ingest_one(
                engine, run, batch, summary, redo, batch_done, batch_claimed), stop_requested)
        except BaseException as exc:
            summary.seconds = time.perf_counter() - started
            with run.ledger_lock:
                session.finish_run(run_id, summary.totals(), RunStatus.FAILED, error=type(exc).__name__)
            raise
        summary.files.sort(key=lambda f: f.location)
        summary.seconds = time.perf_counter() - started
        status = RunStatus.STOPPED if summary.stopped else RunStatus.SUCCEEDED if summary.ok else RunStatus.FAILED
        session.finish_run(run_id, summary.totals(), status)
    return summary


def _ingest_one(engine: Engine, run: _Loading, batch: list[ReadFile], summary: RunSummary,
                redo: frozenset[int], batch_done: BatchDone | None, batch_claimed: BatchClaimed | None) -> None:
    skipped = RunSummary(summary.command, summary.warehouse)
    with run.ledger_lock:
        work = _plan(run.session, batch, run.run_id, skipped, redo)
    if batch_claimed and work.process:
        batch_claimed([p.read.source.location for p in work.process])
    outcomes = skipped.files + _process(engine, run, work)
    summary.files.extend(outcomes)
    if batch_done:
        batch_done(outcomes)


class ReplayCandidate(Protocol):
    file_id: int
    location: str


def replay(settings: Settings, candidates: Sequence[ReplayCandidate], *,
           progress: Progress | None = None) -> RunSummary:
    """Process again ``candidates`` (failed versions, versions with rejected rows) whose
    files are still at their locations. With nothing to process, no run is recorded."""
    from cafe_etl.sources import locate

    found, gone = [], []
    for c in candidates:
        landing = locate(c.location, settings.s3_endpoint_url)
        (found if landing else gone).append(landing or c)
    if found:
        summary = ingest([], settings, command="replay", progress=progress, files=found,
                         redo=frozenset(c.file_id for c in candidates))
    else:
        summary = RunSummary(command="replay", warehouse=open_warehouse(settings.warehouse).describe())
    summary.files += [FileOutcome(c.location, "failed", c.file_id, error="the file is no longer at its location")
                      for c in gone]
    summary.files.sort(key=lambda f: f.location)
    return summary


