"""Runs: ``ingest`` (discover, plan with the ledger, process, load) and ``validate`` (no load).

Files are read in size-bounded batches by a background reader. Each batch is
planned against the ledger (what is new, changed, a copy, unchanged) and claimed,
then transformed by one of the pool's engines while the other engine works on
another batch. Ledger changes are made one at a time; each batch is loaded in one
transaction, so every file is either wholly in the warehouse or not at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass
from queue import Queue
from typing import Protocol

from cafe_etl import keys
from cafe_etl.config import Settings
from cafe_etl.pipeline import large, ledger, stage
from cafe_etl.pipeline.batch import Judged, ReadFile, judge, read_file, stage_batch, too_big
from cafe_etl.pipeline.engine import Engine, EnginePool, MemoryGate
from cafe_etl.pipeline.results import FileOutcome, Problem, RunSummary
from cafe_etl.pipeline.settle import file_name, settle, transforming
from cafe_etl.sources import LandingFile, discover
from cafe_etl.warehouse import open_warehouse
from cafe_etl.warehouse.base import FileRecord, LedgerEntry, LoadSession, NewFile, PartLoad

MAX_FILES_PER_BATCH = 2000
Progress = Callable[[int, int], None]  # (files done, bytes done) since the last call
StopRequested = Callable[[], bool]  # checked between batches: the batches in hand are finished
BatchDone = Callable[[list[FileOutcome]], None]  # each batch's outcomes, as soon as it is settled
BatchClaimed = Callable[[list[str]], None]  # the locations a batch claimed, before it is processed


def _chunks(files: Sequence[LandingFile], max_bytes: int, engines: int = 2) -> list[list[LandingFile]]:
    """Batches of at most ``max_bytes``, as many as a multiple of ``engines`` and of even
    size, so the engines finish together instead of one working alone at the end. The
    first batch is half the others: the first engine starts sooner, and the engines
    run out of step, so one loads while the other transforms."""
    total = sum(f.size for f in files)
    rounds = max(1, -(-total // (max_bytes * engines)))
    even = max(1, -(-total // (rounds * engines)))
    chunks: list[list[LandingFile]] = []
    current: list[LandingFile] = []
    size = 0
    for f in files:
        limit = even // 2 if not chunks and rounds > 1 else even
        if current and (size + f.size > limit or len(current) >= MAX_FILES_PER_BATCH):
            chunks.append(current)
            current, size = [], 0
        current.append(f)
        size += f.size
    if current:
        chunks.append(current)
    return chunks


class BatchReader:
    """Batches of read files, read by a background thread up to ``ahead`` batches in
    advance, so the engines never wait for the disk (and memory holds at most ``ahead``
    extra batches). Reading starts at once, while the warehouse is being opened."""

    # Objects in a store are fetched several at a time: each GET waits mostly on the network.
    REMOTE_READERS = 8

    def __init__(self, files: Sequence[LandingFile], max_bytes: int, ahead: int = 2) -> None:
        self._chunks = _chunks(files, max_bytes, ahead)
        self._ahead = ahead
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="reader")
        remote = any(f.local_path is None for f in files)
        self._fetchers = ThreadPoolExecutor(self.REMOTE_READERS, thread_name_prefix="fetch") if remote else None
        self._pending: list[Future] = []
        self._next = 0
        self._fill()

    def _read(self, chunk: list[LandingFile]) -> list[ReadFile]:
        if self._fetchers is None:
            return [read_file(f) for f in chunk]
        return list(self._fetchers.map(read_file, chunk))

    def _fill(self) -> None:
        while len(self._pending) <= self._ahead and self._next < len(self._chunks):
            self._pending.append(self._pool.submit(self._read, self._chunks[self._next]))
            self._next += 1

    def __iter__(self) -> Iterator[list[ReadFile]]:
        try:
            while self._pending:
                batch = self._pending.pop(0).result()
                self._fill()
                yield batch
        finally:
            self.close()

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        if self._fetchers is not None:
            self._fetchers.shutdown(wait=True)


def _pool(settings: Settings) -> EnginePool:
    """Two engines keep the cores busy (one transforms while the other loads); the
    threads are shared out between them, so the machine is not oversubscribed."""
    engines = 2 if settings.threads >= 2 else 1
    return EnginePool(workers=engines, threads=max(1, settings.threads // engines),
                      memory_limit=settings.memory_limit)


def _secret(settings: Settings) -> bytes | None:
    if not settings.customer_keys:
        return None
    if settings.customer_key:
        return keys.from_text(settings.customer_key, "CAFE_ETL_CUSTOMER_KEY")
    return keys.load_or_create_key(settings.key_file)


def _new_file(f: ReadFile) -> NewFile:
    return NewFile(f.source.location, f.sha256, f.size or f.source.size, f.source.etag)


def _record(j: Judged, file_id: int | None, replaces: int | None, transform_share: float,
            clear: bool = False) -> FileRecord:
    c = j.counts
    loaded = j.failure is None
    return FileRecord(
        file_id=file_id,
        status="loaded" if loaded else "failed",
        format=j.format,
        branch_id=c.branch_id if c else None,
        business_date=c.first_sale.date() if c and c.first_sale and loaded else None,
        rows_read=j.read.decoded.lines if j.read.decoded else 0,
        rows_loaded=c.loaded if c and loaded else 0,
        rows_rejected=c.rejected if c else 0,
        rows_ignored=c.ignored if c else 0,
        items_loaded=c.items if c and loaded else 0,
        seconds_read=j.read.seconds,
        seconds_transform=transform_share,
        error=j.failure,
        replaces=replaces if loaded else None,
        clear_previous=clear,
    )


def _outcome(j: Judged, record: FileRecord, *, loaded_as: str = "loaded") -> FileOutcome:
    outcome = ("reloaded" if record.replaces else loaded_as) if record.status == "loaded" else "failed"
    return FileOutcome(
        location=j.read.source.location,
        outcome=outcome,
        file_id=record.file_id,
        format=record.format,
        rows_read=record.rows_read,
        rows_loaded=record.rows_loaded,
        rows_rejected=record.rows_rejected,
        rows_ignored=record.rows_ignored,
        items_loaded=record.items_loaded,
        rejects_by_reason=dict(j.counts.reasons) if j.counts else {},
        error=record.error,
        replaced_file_id=record.replaces,
        bytes=j.read.size,
        seconds=record.seconds_read + record.seconds_transform,
        unreadable=j.read.unreadable,
        ledger_status=record.status if record.file_id is not None else None,
    )


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
                                         seconds=f.seconds, ledger_status="skipped"))
    return _Work(decision.process, unreadable_ids)


def _claim_unreadable(session: LoadSession, files: list[ReadFile], known: list[LedgerEntry],
                      run_id: int) -> list[tuple[ReadFile, int]]:
    """Files that could not be read are still recorded as failed, under an empty content hash."""
    existing = {e.location: e.file_id for e in known if e.sha256 == ""}
    fresh = [f for f in files if f.source.location not in existing]
    ids = dict(zip((f.source.location for f in fresh), session.claim([_new_file(f) for f in fresh], run_id),
                   strict=True))
    return [(f, existing.get(f.source.location) or ids[f.source.location]) for f in files]


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


def _process(engine: Engine, run: _Loading, work: _Work) -> list[FileOutcome]:
    """Transform one planned batch on ``engine``, then load it; a large file goes alone, in
    slices. A batch that cannot be finished is settled by ``settle``'s one policy: retried
    alone, split, or narrowed down to the one file that fails."""
    settings = run.settings
    outcomes = _record_failures(engine, run, [(Judged(f, None, None, f.error), _record(
        Judged(f, None, None, f.error), file_id, None, 0.0)) for f, file_id in work.unreadable])
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
        judged = judge(engine, [p.read for p in batch], run.settings, run.secret)
        stage_batch(engine, judged, {i: p.file_id for i, p in enumerate(batch)})
    transform = time.perf_counter() - started
    total = sum(j.read.size for j in judged) or 1
    records = [_record(j, p.file_id, p.replaces, transform * j.read.size / total, p.clear)
               for j, p in zip(judged, batch, strict=True)]
    started = time.perf_counter()
    run.session.load(engine, records, run.run_id)
    load = time.perf_counter() - started
    with run.ledger_lock:
        run.session.record_load_seconds([(r.file_id, load * j.read.size / total)
                                         for r, j in zip(records, judged, strict=True)])
    return [_outcome(j, r) for r, j in zip(records, judged, strict=True)]


def _load_sliced(engine: Engine, run: _Loading, planned: ledger.Planned) -> FileOutcome:
    """One large file, judged and loaded slice by slice in one warehouse transaction."""
    started = time.perf_counter()
    read, session = planned.read, run.session
    with session.load_parts(engine, planned.file_id, run.run_id, clear_first=planned.clear) as parts:
        with transforming():
            judged = large.judge(engine, read, run.settings, run.secret,
                                 each_slice=lambda: _load_slice(engine, parts, planned.file_id))
        record = _record(judged, planned.file_id, planned.replaces, time.perf_counter() - started, planned.clear)
        if judged.failure is None or judged.keeps_rejects:
            parts.finish(record)
            return _outcome(judged, record)
    # Nothing of it is kept (its transaction rolled back): its failure is recorded alone.
    return _record_failures(engine, run, [(judged, record)])[0]


def _give_up(engine: Engine, run: _Loading, planned: ledger.Planned, why: str) -> FileOutcome:
    """The file cannot be processed: recorded as failed with ``why``, nothing of it loaded."""
    judged = Judged(planned.read, None, None, why)
    return _record_failures(engine, run, [(judged, _record(judged, planned.file_id, planned.replaces, 0.0,
                                                           planned.clear))])[0]


def _record_failures(engine: Engine, run: _Loading, failed: list[tuple[Judged, FileRecord]]) -> list[FileOutcome]:
    """Ledger rows for files that load nothing, written by a load of an empty batch."""
    if not failed:
        return []
    with transforming():
        judge(engine, [], run.settings, run.secret)
        stage_batch(engine, [], {})
    run.session.load(engine, [record for _, record in failed], run.run_id)
    engine.reset()
    return [_outcome(j, record) for j, record in failed]


def _load_slice(engine: Engine, parts: PartLoad, file_id: int) -> None:
    stage.stage(engine, [(1, file_id, True, True)])
    parts.add(engine)


def ingest(
    specs: Sequence[str], settings: Settings, *, command: str = "ingest", progress: Progress | None = None,
    files: Sequence[LandingFile] | None = None, redo: frozenset[int] = frozenset(),
    stop_requested: StopRequested | None = None, batch_done: BatchDone | None = None,
    batch_claimed: BatchClaimed | None = None,
) -> RunSummary:
    """Load every new or changed export named by ``specs`` (or the given ``files``).

    ``redo``: ledger ids of versions to process again even though they are done.
    ``stop_requested``: when it turns true, no further batch is started; the files of
    the batches left are not claimed, so the next run takes them."""
    started = time.perf_counter()
    files = discover(specs, settings.s3_endpoint_url) if files is None else files
    warehouse = open_warehouse(settings.warehouse, lock_wait=settings.lock_wait)
    secret = _secret(settings)
    summary = RunSummary(command=command, warehouse=warehouse.describe())
    reader = BatchReader(files, settings.batch_bytes)
    with closing(reader), _pool(settings) as pool, warehouse.load_session(pool) as session:
        summary.run_id = run_id = session.start_run(command)
        run = _Loading(session, threading.Lock(), pool.memory, settings, secret, run_id)
        try:
            summary.stopped = _run_batches(pool, iter(reader), progress, lambda engine, batch: _ingest_one(
                engine, run, batch, summary, redo, batch_done, batch_claimed), stop_requested)
        except BaseException as exc:
            summary.seconds = time.perf_counter() - started
            with run.ledger_lock:
                session.finish_run(run_id, summary.totals(), "failed", error=type(exc).__name__)
            raise
        summary.files.sort(key=lambda f: f.location)
        summary.seconds = time.perf_counter() - started
        status = "stopped" if summary.stopped else "succeeded" if summary.ok else "failed"
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


def _run_batches(pool: EnginePool, batches: Iterator[list[ReadFile]], progress: Progress | None,
                 job: Callable[[Engine, list[ReadFile]], None], stop_requested: StopRequested | None = None) -> bool:
    """Run ``job`` on each batch, one batch per idle engine, and re-raise the first failure.

    True when it stopped early because ``stop_requested`` turned true."""
    stopped = False
    idle: Queue[Engine] = Queue()
    for engine in pool.engines:
        idle.put(engine)
    futures: list[Future] = []

    def run(engine: Engine, batch: list[ReadFile]) -> None:
        try:
            with pool.memory.sharing():
                job(engine, batch)
        finally:
            engine.reset()

    with ThreadPoolExecutor(len(pool.engines), thread_name_prefix="engine") as workers:
        for batch in batches:
            engine = idle.get()  # at most one batch per engine in flight: memory stays bounded
            if stop_requested is not None and stop_requested():
                stopped = True
                break
            for done in [f for f in futures if f.done()]:
                done.result()  # a failed batch stops the run
            future = workers.submit(run, engine, batch)

            def finished(f: Future, engine: Engine = engine, batch: list[ReadFile] = batch) -> None:
                idle.put(engine)
                if progress and not f.exception():
                    progress(len(batch), sum(r.source.size for r in batch))

            future.add_done_callback(finished)
            futures.append(future)
        # No batch is left: once an engine falls idle, the ones still working take its cores.
        working = [f for f in futures if not f.done()]
        if len(working) < len(pool.engines) or wait(working, return_when=FIRST_COMPLETED).not_done:
            pool.lend_idle_cores()
        for future in futures:
            future.result()
    return stopped


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


def validate_files(
    specs: Sequence[str], settings: Settings, *, progress: Progress | None = None,
    files: Sequence[LandingFile] | None = None,
) -> tuple[RunSummary, list[Problem]]:
    """The same checks as ``ingest``, loading nothing: every problem, file by file and row by row."""
    started = time.perf_counter()
    files = discover(specs, settings.s3_endpoint_url) if files is None else files
    summary = RunSummary(command="validate", warehouse="(none)")
    problems: list[Problem] = []
    secret = _secret(settings)
    found: list[tuple[Judged, list[Problem]]] = []

    def check(engine: Engine, batch: list[ReadFile]) -> None:
        policy = {
            "engine": engine, "memory": pool.memory,
            "give_up": lambda read, why: (Judged(read, None, None, why), []),
            "too_big": lambda read: too_big(read.size, settings),
            "name": lambda read: file_name(read.source.location), "verb": "checked",
        }
        sliced = [f for f in batch if large.can_slice(f, settings)]
        for read in sliced:
            found.extend(settle([read], lambda one: [_check_sliced(engine, one[0], settings, secret)], **policy))
        whole = [f for f in batch if f not in sliced]
        if whole:
            found.extend(settle(whole, lambda part: _check_batch(engine, part, settings, secret), **policy))

    with _pool(settings) as pool, closing(BatchReader(files, settings.batch_bytes)) as reader:
        _run_batches(pool, iter(reader), progress, check)
    for j, rows in found:
        problems.extend(rows)
        summary.files.append(_outcome(j, _record(j, None, None, 0.0), loaded_as="valid"))
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
