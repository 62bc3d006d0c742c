"""What becomes of a batch that cannot be finished as it is: one policy for every run.

No row and no file can stop a run (DESIGN §3). Two kinds of trouble are settled here,
for ``ingest``, ``validate`` and large files alike:

* **Out of memory.** The engines share one memory limit, so a batch can run out
  because of the other engine's. It is tried again alone (``MemoryGate``: the other
  batches finish first, no new one starts); still short, it is split in halves, again
  and again, down to one file, which fails as too large.
* **An unexpected error** while a batch is transformed or loaded (``ContentFault``:
  an engine error, a value the warehouse refuses). The batch is split in halves until
  the one file that causes it stands alone; that file fails with a sentence that
  names it (never SQL or an engine message, which may quote row data), and the other
  files go on. Its failure is recorded, so it is not claimed again and again.

Errors of the warehouse itself (unreachable, full, busy) are no file's doing: they
are not caught here, they stop the run, and its claims wait for the next run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import TypeVar

import duckdb

from cafe_etl.engine import Engine, MemoryGate
from cafe_etl.errors import CafeEtlError, ContentFault
from cafe_etl.logs import LOGGER_NAME

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(LOGGER_NAME)


@contextmanager
def transforming():
    """Any error of the engine stages is the batch's content's doing (the engine is
    in memory, its input the only thing that varies): a ``ContentFault``. Running out
    of memory and a user's interrupt keep their own meaning."""
    try:
        yield
    except (duckdb.OutOfMemoryException, duckdb.InterruptException, MemoryError, ContentFault, CafeEtlError):
        raise
    except Exception as exc:
        raise ContentFault("transformed") from exc


def unexpected(name: str, stage: str, verb: str = "loaded") -> str:
    """Why a file that made the pipeline fail is set aside, in the user's terms."""
    return (f"{name} could not be {stage}: something in it made the pipeline fail unexpectedly; "
            f"it was set aside and the other files were {verb} (keep the file and report it)")


def settle(items: Sequence[T], attempt: Callable[[Sequence[T]], list[R]], *, engine: Engine, memory: MemoryGate,
           give_up: Callable[[T, str], R], too_big: Callable[[T], str], name: Callable[[T], str],
           verb: str = "loaded", alone: bool = False) -> list[R]:
    """``attempt(items)``; when it cannot finish, retry alone, in halves, or ``give_up``
    on the one item that causes the trouble, with the reason."""

    def again(part: Sequence[T], by_itself: bool) -> list[R]:
        return settle(part, attempt, engine=engine, memory=memory, give_up=give_up, too_big=too_big, name=name,
                      verb=verb, alone=by_itself)

    def halves(by_itself: bool) -> list[R]:
        half = len(items) // 2
        return again(items[:half], by_itself) + again(items[half:], by_itself)

    try:
        return attempt(items)
    except duckdb.OutOfMemoryException:
        engine.reset()
        if not alone:
            with memory.alone():
                return again(items, True)
        if len(items) > 1:
            return halves(True)
        return [give_up(items[0], too_big(items[0]))]
    except ContentFault as fault:
        engine.reset()
        if len(items) > 1:
            return halves(alone)
        _log_fault(name(items[0]), fault)
        return [give_up(items[0], unexpected(name(items[0]), fault.stage, verb))]


def _log_fault(name: str, fault: ContentFault) -> None:
    """The cause's kind only: an engine's message may quote the row that caused it.
    With CAFE_ETL_DEBUG set, the whole traceback, for a developer's eyes."""
    cause = fault.__cause__
    debug = bool(os.environ.get("CAFE_ETL_DEBUG"))
    log.log(logging.WARNING if debug else logging.INFO, "file set aside: %s could not be %s (%s)", name,
            fault.stage, type(cause).__name__ if cause else "unknown error", exc_info=fault if debug else None)


def file_name(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1] or location
