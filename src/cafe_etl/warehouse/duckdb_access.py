"""Who may open an embedded DuckDB warehouse file, and when.

DuckDB lets one process at a time write a file (an operating-system lock), and within
one process refuses to attach a file that another connection has open. So:

* **within a process**, ``FileAccess`` is a readers-writer lock per file (a waiting
  loader goes first), with an anchor connection that keeps the file open for a moment
  after the last reader, so a page's burst of API calls opens it once;
* **across processes**, a loader retries the file lock for ``WRITER_WAIT`` seconds,
  leaving a ``<file>.load-wanted`` marker so that readers in other processes step
  aside; readers retry for as long as they were told to wait;
* **a file being created** by another loader is busy, not broken: it is waited for
  like a held lock (for a moment it exists with no DuckDB header yet);
* **what is at the path** is named in the user's terms when it is no warehouse (a
  folder, an empty file, a CSV file: DuckDB itself would attach a CSV file as an empty
  in-memory database, and load into it).

``translate`` says DuckDB's errors once, in the user's terms.
"""

from __future__ import annotations

import atexit
import os
import random
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb

from cafe_etl.errors import WarehouseBusy, WarehouseError

# Seconds a loader waits for other processes holding the file before "busy", unless
# told otherwise (CAFE_ETL_LOCK_WAIT); a file younger than this may still be being created.
WRITER_WAIT = 10.0
# A marker older than this was left by a loader that died: ignored.
_MARKER_FRESH = 30.0
# Every DuckDB database file has this at bytes 8-11 (after the header's checksum).
_MAGIC = b"DUCK"
_MAGIC_AT = slice(8, 12)


def translate(exc: duckdb.Error, path: str) -> WarehouseError:
    """DuckDB's errors, said once, in the user's terms."""
    text = str(exc)
    if "Could not set lock" in text or "Conflicting lock" in text or "Unique file handle conflict" in text:
        return WarehouseBusy(f"warehouse {path} is in use by another process; try again when it has finished")
    if "File too large" in text or "No space left" in text or "Disk quota" in text:
        return WarehouseError(f"cannot write warehouse {path}: the disk (or the file size limit) is full; "
                              "free some space and run again: what was loaded is kept, the rest is retried")
    if "not a valid DuckDB database file" in text:
        return WarehouseError(f"{path} is not a DuckDB warehouse file")
    if isinstance(exc, duckdb.SerializationException | duckdb.IOException):
        first = text.splitlines()[0] if text else type(exc).__name__
        return WarehouseError(f"cannot open warehouse {path}: {first}")
    return WarehouseError(f"warehouse {path}: {text.splitlines()[0] if text else type(exc).__name__}")


# What is at the path -------------------------------------------------------------
# Only ``os.stat`` looks at the file while DuckDB may hold it: closing any descriptor of
# a file drops every POSIX lock this process holds on it, DuckDB's included. Its bytes
# are read only once DuckDB has refused it as a database.

def check_path(path: str) -> None:
    """Refuse, in the user's terms, a path that cannot be a warehouse file: a folder, a
    device, an empty file. Nothing there yet (a new warehouse) and an empty file that
    another loader is creating both pass."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WarehouseError(f"cannot open warehouse {path}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise WarehouseError(f"{path} is a folder, not a warehouse file: name a file, such as "
                             f"{os.path.join(path, 'warehouse.duckdb')}")
    if not stat.S_ISREG(info.st_mode):
        raise WarehouseError(f"{path} is not a regular file, so it cannot be a warehouse")
    if info.st_size == 0 and not _fresh(info):
        raise _not_a_warehouse(path)


def _not_a_warehouse(path: str) -> WarehouseError:
    """What the file that DuckDB refused looks like, from its first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        head = None
    return WarehouseError(f"{path} is {_kind(head)}, not a DuckDB warehouse file: "
                          "name the warehouse's own file, or a new one")


def _kind(head: bytes | None) -> str:
    if head is None:
        return "an unreadable file"
    if not head:
        return "an empty file"
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    if head.startswith(b"SQLite format 3"):
        return "an SQLite database"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "some other kind of file"
    return "a CSV file" if "," in text or ";" in text else "a text file"


def _refused(exc: duckdb.Error, path: str) -> WarehouseError:
    """DuckDB's error opening the file, in the user's terms."""
    text = str(exc)
    if "not a valid DuckDB database file" in text or "Cannot launch in-memory database" in text:
        return _not_a_warehouse(path)
    return translate(exc, path)


def _fresh(info: os.stat_result) -> bool:
    return time.time() - info.st_mtime < WRITER_WAIT


def _being_created(exc: duckdb.Error, path: str) -> bool:
    """DuckDB found no valid header in a file modified a moment ago, whose first bytes
    are those of a DuckDB file or too few to tell: another loader is creating it (the
    file exists before its header is written). Reading it is safe here: DuckDB has just
    refused it, so no connection of this process holds it."""
    if "not a valid DuckDB database file" not in str(exc):
        return False
    try:
        if not _fresh(os.stat(path)):
            return False
        with open(path, "rb") as handle:
            head = handle.read(_MAGIC_AT.stop)
    except OSError:
        return True  # gone again: the creator failed; the next try says what is there
    return len(head) < _MAGIC_AT.stop or head[_MAGIC_AT] == _MAGIC


def _wait_again(exc: duckdb.Error, path: str) -> bool:
    return isinstance(translate(exc, path), WarehouseBusy) or _being_created(exc, path)


# Opening the file ----------------------------------------------------------------

def _marker(path: str) -> str:
    return f"{os.path.abspath(path)}.load-wanted"


def load_wanted(path: str) -> bool:
    """Whether a loader in some process is waiting for this warehouse file."""
    try:
        return time.time() - os.stat(_marker(path)).st_mtime < _MARKER_FRESH
    except OSError:
        return False


def attach_for_writing(control: duckdb.DuckDBPyConnection, path: str, alias: str, wait: float = WRITER_WAIT) -> None:
    """Attach the file for writing. While another process reads, writes or creates it,
    try again for up to ``wait`` seconds, announcing the wait in a marker file so that
    readers step aside."""
    deadline = time.monotonic() + wait
    marker = _marker(path)
    try:
        while True:
            check_path(path)
            try:
                control.execute(f"ATTACH ? AS {alias}", [os.path.abspath(path)]).fetchall()
                break
            except duckdb.Error as exc:
                if not _wait_again(exc, path) or time.monotonic() >= deadline:
                    raise _refused(exc, path) from None
            with suppress(OSError):
                Path(marker).touch()
            time.sleep(0.1 + 0.2 * random.random())
    finally:
        with suppress(OSError):
            os.unlink(marker)
    attached = control.execute("SELECT path FROM duckdb_databases() WHERE database_name = ?", [alias]).fetchall()
    if not attached or attached[0][0] is None:  # DuckDB made an in-memory database of a CSV file
        control.execute(f"DETACH DATABASE IF EXISTS {alias}").fetchall()
        raise _not_a_warehouse(path)


def connect_read_only(path: str, deadline: float) -> duckdb.DuckDBPyConnection:
    """A read-only connection; while another process loads (and holds the file) or
    creates it, try again until ``deadline``."""
    while True:
        check_path(path)
        try:
            con = duckdb.connect(path, read_only=True)
            con.execute("SET enable_progress_bar = false").fetchall()
            return con
        except duckdb.Error as exc:
            if not _wait_again(exc, path) or time.monotonic() >= deadline:
                raise _refused(exc, path) from None
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def step_aside_for_a_loader(access: FileAccess, path: str, deadline: float) -> None:
    """A loader in another process waits for the file: let it go (close the anchor,
    open nothing) until it has it, or until ``deadline`` ("busy")."""
    while load_wanted(path):
        access.release_anchor()
        if time.monotonic() >= deadline:
            raise WarehouseBusy(f"warehouse {path} is in use by another process (a load is starting); "
                                "try again when it has finished")
        time.sleep(0.05)


# Within the process ----------------------------------------------------------------

_umask_lock = threading.Lock()
_umask_holders = 0
_umask_before = 0


@contextmanager
def private_files() -> Iterator[None]:
    """Files and folders made meanwhile are private (umask 077): DuckDB creates the
    warehouse and its write-ahead log itself, with no mode to ask for. The umask is the
    process's, so the first session in sets it and the last one out restores it."""
    global _umask_holders, _umask_before
    with _umask_lock:
        if not _umask_holders:
            _umask_before = os.umask(0o077)
        _umask_holders += 1
    try:
        yield
    finally:
        with _umask_lock:
            _umask_holders -= 1
            if not _umask_holders:
                os.umask(_umask_before)


class FileAccess:
    """Readers and the loader of one warehouse file inside this process.

    DuckDB refuses to open a file that another connection of the same process has
    attached, so ``serve --watch`` would see its own loader as an outage. Here the
    loader waits for the readers in hand, and readers wait (boundedly) for the batch
    being loaded; a waiting loader goes first, so a busy dashboard cannot starve it.
    Between processes the operating system's file lock does the same job.

    Opening a large file costs tens of milliseconds (its catalog is read), so after
    the last reader an anchor connection keeps the database open for ``LINGER``
    seconds: a page's burst of API calls opens it once. A loader in this process
    closes the anchor at once; one in another process retries past it."""

    LINGER = 0.5

    _all: dict[str, FileAccess] = {}
    _all_lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._anchor: duckdb.DuckDBPyConnection | None = None
        self._closer: threading.Timer | None = None

    @classmethod
    def close_all(cls) -> None:
        """Close every anchor now. Run at exit: a closer timer firing while the
        interpreter shuts down would be inside DuckDB when its thread is torn down,
        which aborts the process."""
        with cls._all_lock:
            for access in cls._all.values():
                access.release_anchor()

    @classmethod
    def of(cls, path: str) -> FileAccess:
        real = os.path.realpath(path)
        with cls._all_lock:
            if real not in cls._all:
                cls._all[real] = cls(path)
            return cls._all[real]

    @contextmanager
    def reading(self, wait: float) -> Iterator[None]:
        with self._cond:
            if not self._cond.wait_for(lambda: not self._writing and not self._writers_waiting, timeout=wait):
                raise WarehouseBusy(f"warehouse {self.path} is being loaded; try again when the batch has finished")
            self._readers += 1
            if self._closer:
                self._closer.cancel()
                self._closer = None
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers and self._anchor is not None and not self._closer:
                    self._closer = threading.Timer(self.LINGER, self._close_idle)
                    self._closer.daemon = True
                    self._closer.start()
                self._cond.notify_all()

    def anchor(self) -> None:
        """Keep the database open between readers (called by a reader, so opening it
        again only joins the instance already open). Not a cursor of the reader's
        connection: closing a connection closes its cursors."""
        with self._cond:
            if self._anchor is None:
                with suppress(duckdb.Error):
                    self._anchor = duckdb.connect(self.path, read_only=True)

    def release_anchor(self) -> None:
        """Close the anchor now (readers in hand keep their own connections)."""
        with self._cond:
            self._drop_anchor()

    def _close_idle(self) -> None:
        with self._cond:
            if not self._readers:
                self._drop_anchor()

    def _drop_anchor(self) -> None:  # called holding self._cond
        if self._closer:
            self._closer.cancel()
            self._closer = None
        if self._anchor is not None:
            with suppress(duckdb.Error):
                self._anchor.close()
            self._anchor = None

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writing and not self._readers)
            self._writers_waiting -= 1
            self._writing = True
            self._drop_anchor()
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


atexit.register(FileAccess.close_all)
