"""One batch of files through every engine stage, ending with staged ``out_*`` tables.

Many files go through each stage together (one set-based pass per stage) while each
file keeps its own verdict: a bad file never stops the others.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime

from cafe_etl.config import Settings
from cafe_etl.engine import Engine
from cafe_etl.pipeline import clean, extract, stage, transform, validate
from cafe_etl.pipeline.decode import Decoded, UndecodableFile, decode, fingerprint, scan_file
from cafe_etl.pipeline.results import FileOutcome
from cafe_etl.pipeline.validate import FileCounts
from cafe_etl.rules import FileStatus
from cafe_etl.sources import LandingFile
from cafe_etl.warehouse.base import FileRecord, RowCounts


@dataclass
class ReadFile:
    """A landing file after reading: its version and text, or why it could not be read."""

    source: LandingFile
    size: int = 0
    sha256: str = ""
    decoded: Decoded | None = None
    error: str | None = None  # unreadable or undecodable
    unreadable: bool = False
    seconds: float = 0.0


@dataclass
class Judged:
    """The engine's verdict on one file of a batch."""

    read: ReadFile
    idx: int | None  # the file's number inside the engine, if it got there
    counts: FileCounts | None
    failure: str | None  # None: load its good rows

    @property
    def format(self) -> str | None:
        d = self.read.decoded
        if d is None:
            return None
        layout = self.counts.layout if self.counts else "unknown"
        header = "+header" if self.counts and self.counts.header_lines else ""
        return f"{layout}{header} {d.encoding} {d.line_endings}"

    @property
    def keeps_rejects(self) -> bool:
        """Rejects are quarantined for loaded files, and for files failed only because every row was bad."""
        lines = self.read.decoded.lines if self.read.decoded else 0
        return self.idx is not None and validate.structural_failure(self.counts, lines) is None


def too_big(size: int, settings: Settings) -> str:
    """Why a file that ran the engine out of memory is failed."""
    return (f"the file ({size / 2**20:,.0f} MiB) is too large to process within the engine's memory limit "
            f"({settings.memory_limit}): raise CAFE_ETL_MEMORY_LIMIT or split the file")


# A local file this large is fingerprinted in chunks and read by the engine from disk,
# so memory does not grow with it.
STREAM_FROM = 32 << 20


def read_file(source: LandingFile) -> ReadFile:
    started = time.perf_counter()
    out = ReadFile(source)
    if source.local_path is not None and source.size >= STREAM_FROM:
        try:
            scanned = scan_file(source.local_path)
        except UndecodableFile as exc:
            out.error = str(exc)
            out.seconds = time.perf_counter() - started
            return out
        except FileNotFoundError:
            out.error, out.unreadable = f"{source.local_path} disappeared before it could be read", True
            out.seconds = time.perf_counter() - started
            return out
        except OSError as exc:
            out.error, out.unreadable = f"cannot read {source.local_path}: {exc.strerror}", True
            out.seconds = time.perf_counter() - started
            return out
        if scanned is not None:
            out.sha256, out.size, out.decoded = scanned
            out.seconds = time.perf_counter() - started
            return out
    try:
        data = source.read()
    except Exception as exc:  # noqa: BLE001 - any read failure is this file's outcome, not the run's
        out.error, out.unreadable = str(exc), True
        out.seconds = time.perf_counter() - started
        return out
    out.size = len(data)
    out.sha256 = fingerprint(data)
    try:
        out.decoded = decode(data, engine_can_read=source.local_path is not None)
    except UndecodableFile as exc:
        out.error = str(exc)
    out.seconds = time.perf_counter() - started
    return out


def _line_ending(decoded: Decoded) -> str | None:
    if not decoded.streamable:
        return None
    return "\r\n" if decoded.line_endings == "crlf" else "\n"


def _size_now(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def judge(engine: Engine, files: list[ReadFile], settings: Settings, secret: bytes | None) -> list[Judged]:
    """Run the engine stages over the decodable ``files``; every file gets a verdict."""
    inside = [f for f in files if f.decoded is not None]
    idx_of = {id(f): i for i, f in enumerate(inside, start=1)}
    # Every stage runs even for an empty batch, so the staged tables always exist.
    sizes = extract.extract(engine, [extract.Document(f.decoded.text, f.source.local_path, _line_ending(f.decoded))
                                     for f in inside])
    for idx, f in enumerate(inside, start=1):
        if f.decoded.streamable:
            sizes[idx] = _size_now(f.source.local_path)
        if f.decoded.text is None and sizes.get(idx, 0) != f.size:
            # The file changed between hashing and reading: this version cannot be trusted.
            f.error = "the file changed while it was being read; it will be read again"
    clean.clean(engine, secret)
    transform.transform(engine, settings.rules.max_item_price)
    counts = validate.validate(engine, settings.rules, datetime.now())
    judged = []
    for f in files:
        idx = idx_of.get(id(f))
        if idx is None or f.error:
            judged.append(Judged(f, idx, None, f.error or "unreadable"))
            continue
        c = counts.get(idx)
        judged.append(Judged(f, idx, c, validate.verdict(c, f.decoded.lines)))
    return judged


def stage_batch(engine: Engine, judged: list[Judged], file_ids: dict[int, int]) -> None:
    """Stage the load tables; ``file_ids`` maps a judged file's position to its ledger id."""
    rows = [
        (j.idx, file_ids[position], j.failure is None, j.keeps_rejects)
        for position, j in enumerate(judged)
        if j.idx is not None and position in file_ids
    ]
    stage.stage(engine, rows)


def transform_batch(engine: Engine, files: list[ReadFile], file_ids: dict[int, int], settings: Settings,
                    secret: bytes | None) -> list[Judged]:
    """Judge ``files`` and stage what loads of them on ``engine``: a batch's transform."""
    judged = judge(engine, files, settings, secret)
    stage_batch(engine, judged, file_ids)
    return judged


def record_of(j: Judged, file_id: int | None, replaces: int | None, transform_share: float,
              clear: bool = False) -> FileRecord:
    """What the ledger records of a judged file."""
    c = j.counts
    loaded = j.failure is None
    lines = j.read.decoded.lines if j.read.decoded else 0
    counts = c.row_counts(lines, loaded) if c else RowCounts(rows_read=lines)
    return FileRecord(
        file_id=file_id,
        status=FileStatus.LOADED if loaded else FileStatus.FAILED,
        format=j.format,
        branch_id=c.branch_id if c else None,
        business_date=c.first_sale.date() if c and c.first_sale and loaded else None,
        **counts.row_counts(),
        seconds_read=j.read.seconds,
        seconds_transform=transform_share,
        error=j.failure,
        replaces=replaces if loaded else None,
        clear_previous=clear,
    )


def outcome_of(j: Judged, record: FileRecord, *, loaded_as: str = "loaded") -> FileOutcome:
    """What a run reports of a judged file, as recorded."""
    outcome = ("reloaded" if record.replaces else loaded_as) if record.status == FileStatus.LOADED else "failed"
    return FileOutcome(
        location=j.read.source.location,
        outcome=outcome,
        file_id=record.file_id,
        format=record.format,
        **record.row_counts(),
        rejects_by_reason=dict(j.counts.reasons) if j.counts else {},
        error=record.error,
        replaced_file_id=record.replaces,
        bytes=j.read.size,
        seconds=record.seconds_read + record.seconds_transform,
        unreadable=j.read.unreadable,
        ledger_status=record.status if record.file_id is not None else None,
    )
