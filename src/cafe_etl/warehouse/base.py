"""The warehouse contract that every backend implements (DESIGN §5, §6).

A backend provides two things: a load session, which keeps the ledger and loads a
staged batch atomically, and a reader, the one gateway every report, status page
and API call reads through (parameters bound, never formatted into SQL).
"""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from datetime import date
from enum import Enum
from typing import Any

from cafe_etl.engine import Engine, EnginePool
from cafe_etl.errors import ResultTooLarge
from cafe_etl.rules import FileStatus, RunStatus

# The tables whose rows belong to one file version (keyed by file_id): what leaves
# with a replaced or reprocessed version, facts before the rows they hang off.
FILE_TABLES = ("fact_sale_item", "fact_sale", "etl_reject", "agg_product_day", "agg_pair_day", "agg_sale_hour",
               "agg_customer_day")


@dataclass(frozen=True)
class LedgerEntry:
    """A file version the ledger already knows."""

    file_id: int
    location: str
    sha256: str
    status: str
    run_id: int | None = None
    claim_live: bool = False  # status loading, and the loader that claimed it may still be at work


@dataclass(frozen=True)
class NewFile:
    location: str
    sha256: str
    size: int
    etag: str | None = None


@dataclass(kw_only=True)
class RowCounts:
    """What became of a file's lines: one object carried from the engine's verdict to
    the ledger (``FileRecord``) and the run's summary (``FileOutcome``), which both
    extend it. A counter added here is a ledger column (add it to the DDL) and a field
    of every file's result in ``ingest --json``."""

    rows_read: int = 0  # lines, header and blank lines included
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_ignored: int = 0  # header and blank lines
    items_loaded: int = 0  # line items of the loaded sales

    def row_counts(self) -> dict[str, int]:
        """The counters alone, to hand on: ``FileOutcome(..., **record.row_counts())``."""
        return {f.name: getattr(self, f.name) for f in fields(RowCounts)}


@dataclass
class FileRecord(RowCounts):
    """What one load writes to the ledger for one file version."""

    file_id: int
    status: FileStatus  # loaded or failed
    format: str | None = None
    branch_id: str | None = None
    business_date: date | None = None
    seconds_read: float = 0.0
    seconds_transform: float = 0.0
    seconds_load: float = 0.0
    error: str | None = None
    replaces: int | None = None  # the loaded version of the same location it supersedes
    # rows of an earlier load of this same version to delete first (not a ledger value)
    clear_previous: bool = field(default=False, metadata={"ledger": False})


# What a load writes to the ledger is FileRecord itself: its fields are the columns of
# the staged ``load_record`` rows, and every field but the key and ``replaces`` is a
# column of ``etl_file`` that the load sets (load_sql.py). Adding a ledger column means
# adding it to the DDL and to FileRecord (and filling it), nothing else.
_SQL_TYPES = {int: "BIGINT", float: "DOUBLE PRECISION", str: "VARCHAR", date: "DATE", FileStatus: "VARCHAR"}


def record_columns() -> list[tuple[str, str]]:
    """(column, SQL type) of a staged ledger record, in FileRecord's order."""
    hints = typing.get_type_hints(FileRecord)
    columns = []
    for f in fields(FileRecord):
        if f.metadata.get("ledger", True):
            kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
            columns.append((f.name, _SQL_TYPES[kind]))
    return columns


def record_values(record: FileRecord) -> tuple:
    values = (getattr(record, name) for name, _ in record_columns())
    return tuple(v.value if isinstance(v, Enum) else v for v in values)


@dataclass
class RunTotals:
    files_seen: int = 0
    files_loaded: int = 0
    files_failed: int = 0
    files_skipped: int = 0
    files_replaced: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class LoadSession(ABC):
    """An open, writable warehouse for the duration of one run."""

    @abstractmethod
    def start_run(self, command: str) -> int: ...

    @abstractmethod
    def recategorise(self) -> int:
        """Every product into its category by the categories file in use; how many moved."""

    @abstractmethod
    def finish_run(self, run_id: int, totals: RunTotals, status: RunStatus, error: str | None = None) -> None: ...

    @abstractmethod
    def ledger_transaction(self) -> AbstractContextManager[None]:
        """One loader at a time looks up and claims: no two loaders claim the same file."""

    @abstractmethod
    def lookup(self, files: Sequence[NewFile]) -> list[LedgerEntry]:
        """Known versions sharing a location or a content hash with any of ``files``."""

    @abstractmethod
    def claim(self, files: Sequence[NewFile], run_id: int) -> list[int]:
        """Ledger rows in status ``loading`` for new versions; their file ids, in order."""

    @abstractmethod
    def take_over(self, file_ids: Sequence[int], run_id: int) -> None:
        """Known versions this run processes again: their claims become this run's."""

    @abstractmethod
    def record_copies(self, copies: Sequence[tuple[NewFile, int]], run_id: int) -> None:
        """Versions skipped because the same content is already known at another location."""

    @abstractmethod
    def load(self, engine: Engine, records: Sequence[FileRecord], run_id: int) -> None:
        """Load ``engine``'s staged ``out_*`` tables and update the ledger, all in one transaction.

        Engines may load at the same time; the other methods are called one at a time."""

    @abstractmethod
    def record_load_seconds(self, seconds: Sequence[tuple[int, float]]) -> None:
        """Each file's share of its batch's load time, known only once the load has committed."""

    @abstractmethod
    def load_parts(self, engine: Engine, file_id: int, run_id: int,
                   clear_first: bool) -> AbstractContextManager[PartLoad]:
        """Load one file part by part, all in one transaction (see ``PartLoad``);
        ``clear_first``: rows of an earlier load of this version are deleted first.
        Leaving the context without ``finish`` rolls everything back."""


class PartLoad(ABC):
    """One file loaded in parts (a large file's slices) and committed once.

    Each part's facts and rejects join the file's open transaction; its dimension rows
    are committed at once, as a batch's are. ``finish`` adds the per-file aggregates,
    computed from the file's facts, removes the version it replaces and writes the
    ledger, then commits: readers see all of the file or none of it."""

    @abstractmethod
    def add(self, engine: Engine) -> None:
        """The engine's staged ``out_*`` tables of one part (their aggregates are not read)."""

    @abstractmethod
    def finish(self, record: FileRecord) -> None: ...


class Reader(ABC):
    """The read gateway: parameterised queries only.

    ``max_rows`` bounds what one query may return (``ResultTooLarge`` beyond it); a
    reader opened with a time limit cancels any query that runs longer
    (``QueryTimeout``)."""

    # Whether the warehouse keeps the chain's pairs per day (``agg_pair_date``), which a
    # question about every branch reads instead of each branch's pairs.
    keeps_chain_pairs: bool = True
    # Whether the warehouse keeps each customer's sales to date (in ``dim_customer``),
    # weeks (``agg_customer_week``) and branches (``agg_customer_branch``), which
    # customer questions read instead of every sale.
    keeps_customer_rollups: bool = True

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = (), *, max_rows: int | None = None) -> list[tuple]: ...

    def regex_match(self, expression: str) -> str:
        """A condition true when ``expression`` matches the regular expression given as
        the next bound parameter (the dialects spell it differently)."""
        return f"regexp_matches({expression}, ?)"

    def limit_time(self, seconds: float) -> None:  # noqa: B027 - a hook: a reader without time limits ignores it
        """The next queries may run at most ``seconds`` each (what is left of an
        answer's time limit). A reader opened without a time limit keeps none."""

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None


class Warehouse(ABC):
    url: str

    @abstractmethod
    def load_session(self, pool: EnginePool) -> AbstractContextManager[LoadSession]: ...

    @abstractmethod
    def reader(self, time_limit: float | None = None, wait: float = 0.0) -> AbstractContextManager[Reader]:
        """A short-lived read connection; ``time_limit`` seconds per query, if given.
        Where loaders lock readers out (an embedded file), wait up to ``wait`` seconds
        for them before ``WarehouseBusy``."""

    def describe(self) -> str:
        return self.url


def fetch_limited(cursor: Any, max_rows: int | None) -> list[tuple]:
    """All rows of an executed query, or ``ResultTooLarge`` past ``max_rows``."""
    if max_rows is None:
        return cursor.fetchall()
    rows = cursor.fetchmany(max_rows + 1)
    if len(rows) > max_rows:
        raise ResultTooLarge(f"the answer has more than {max_rows:,} rows: narrow the dates or choose a branch")
    return rows


def cleanup(records: Sequence[FileRecord]) -> list[int]:
    """File ids whose rows a load deletes: earlier loads of the versions being processed
    again, and the versions that new ones replace."""
    ids = {r.file_id for r in records if r.clear_previous}
    ids |= {r.replaces for r in records if r.status == FileStatus.LOADED and r.replaces is not None}
    return sorted(ids)
