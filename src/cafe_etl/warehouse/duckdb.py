"""The embedded DuckDB warehouse: one file, written by one process at a time.

Loading attaches the warehouse file to the processing engine, so a staged batch
moves into the star schema with plain ``INSERT … SELECT`` inside one transaction:
no rows cross into Python. Reads use short-lived read-only connections.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from cafe_etl import __version__
from cafe_etl.errors import QueryTimeout, WarehouseBusy, WarehouseError, WarehouseMissing
from cafe_etl.pipeline.engine import Engine, EnginePool, temp_table
from cafe_etl.warehouse.base import (
    FILE_TABLES,
    SCHEMA_VERSION,
    FileRecord,
    LedgerEntry,
    LoadSession,
    NewFile,
    PartLoad,
    Reader,
    RunTotals,
    Warehouse,
    cleanup,
    fetch_limited,
    split_statements,
)

_ALIAS = "wh"
def _load_wanted_marker(path: str) -> str:
    return f"{os.path.abspath(path)}.load-wanted"


# A marker older than this was left by a loader that died: ignored.
_MARKER_FRESH = 30.0


def _load_wanted(path: str) -> bool:
    """Whether a loader in some process is waiting for this warehouse file."""
    try:
        return time.time() - os.stat(_load_wanted_marker(path)).st_mtime < _MARKER_FRESH
    except OSError:
        return False


CHECKPOINT_AFTER = "256MB"
# Seconds a loader waits for other processes holding the file before "busy".
WRITER_WAIT = 10.0
NO_KEY = 2**63 - 1  # above every key: a customer without a first branch yet takes any

_SEED = """
INSERT INTO dim_time
SELECT (h * 100 + m)::SMALLINT, h::SMALLINT, m::SMALLINT,
       CASE WHEN h < 6 THEN 'night' WHEN h < 12 THEN 'morning' WHEN h < 14 THEN 'lunch'
            WHEN h < 17 THEN 'afternoon' WHEN h < 22 THEN 'evening' ELSE 'night' END
FROM range(24) AS hours(h), range(60) AS minutes(m)
WHERE NOT EXISTS (SELECT 1 FROM dim_time);
INSERT INTO dim_payment_method VALUES (1, 'CASH'), (2, 'CARD') ON CONFLICT DO NOTHING;
"""

# Dimensions are shared by every batch: one engine at a time adds to them, in a
# transaction of their own. A dimension row whose batch then fails is harmless (a
# product or customer nobody bought from yet), so the facts need not wait for it.
# The batch's customers are looked up in the dimension once: new ones are added, known
# ones updated only when this batch saw them earlier.
_LOAD_DIMENSIONS = """
INSERT INTO dim_date
SELECT date_key, date, year(date), quarter(date), month(date), monthname(date), week(date), isodow(date),
       dayname(date), isodow(date) >= 6
FROM out_date ON CONFLICT DO NOTHING;
INSERT INTO dim_branch SELECT branch_key, branch_id, name, first_seen FROM out_branch ON CONFLICT DO NOTHING;
UPDATE dim_branch SET name = o.name
FROM out_branch o
WHERE dim_branch.branch_key = o.branch_key AND dim_branch.name = lower(dim_branch.name) AND o.name <> lower(o.name);
UPDATE dim_branch SET first_seen = o.first_seen
FROM out_branch o
WHERE dim_branch.branch_key = o.branch_key AND (dim_branch.first_seen IS NULL OR o.first_seen < dim_branch.first_seen);
INSERT INTO dim_product SELECT product_key, size, name, flavour FROM out_product ON CONFLICT DO NOTHING;
CREATE OR REPLACE TEMP TABLE load_customer AS
SELECT o.customer_key, o.first_seen, o.first_branch_key, d.customer_key IS NULL AS new,
       CASE WHEN d.customer_key IS NULL THEN false
            WHEN o.first_seen < d.first_seen THEN true
            WHEN o.first_seen = d.first_seen THEN o.first_branch_key < coalesce(d.first_branch_key, $no_key)
            ELSE false END AS earlier
FROM out_customer o LEFT JOIN dim_customer d USING (customer_key);
UPDATE dim_customer SET first_seen = o.first_seen, first_branch_key = o.first_branch_key
FROM load_customer o
WHERE o.earlier AND dim_customer.customer_key = o.customer_key;
INSERT INTO dim_customer (customer_key, first_seen, first_branch_key)
SELECT customer_key, first_seen, first_branch_key FROM load_customer WHERE new
"""

# A batch's facts and rejects, as read from the engine. A large file's parts leave the
# engine as Parquet written by these same queries (their transaction is on another
# connection, which cannot see the engine's temp tables); they hold no personal data.
_ROWS = {
    "fact_sale": "SELECT file_id, source_row, date_key, time_key, branch_key, payment_key, customer_key, item_count, "
                 "total FROM out_sale",
    "fact_sale_item": "SELECT file_id, source_row, line_number, product_key, unit_price, date_key, branch_key "
                      "FROM out_item",
    "etl_reject": "SELECT file_id, source_row, reason_code, detail, row_data, $run_id::BIGINT FROM out_reject",
}

# The batch itself, in one transaction: the old rows of versions being replaced or
# processed again, the new facts and rejects, the ledger. Appends never conflict, so
# two engines load their batches at the same time.
_LOAD_FACTS = ";\n".join([
    *(f"DELETE FROM {table} WHERE file_id IN (SELECT file_id FROM load_cleanup)" for table in FILE_TABLES),
    "INSERT INTO agg_product_day SELECT file_id, date_key, branch_key, product_key, quantity, revenue "
    "FROM out_product_day",
    "INSERT INTO agg_sale_hour SELECT file_id, date_key, branch_key, hour, transactions, items, revenue "
    "FROM out_sale_hour",
    "INSERT INTO agg_customer_day SELECT file_id, date_key, branch_key, customers FROM out_customer_day",
    *(f"INSERT INTO {table} {select}" for table, select in _ROWS.items()),
])

# The ledger, in the same transaction as the rows it describes.
_LEDGER = """
UPDATE etl_file SET status = 'replaced', replaced_by = r.file_id, processed_at = $now
FROM load_record r
WHERE etl_file.file_id = r.replaces AND r.status = 'loaded';
UPDATE etl_file SET
    status = r.status, format = r.format, branch_id = r.branch_id, business_date = r.business_date,
    rows_read = r.rows_read, rows_loaded = r.rows_loaded, rows_rejected = r.rows_rejected,
    rows_ignored = r.rows_ignored, items_loaded = r.items_loaded, seconds_read = r.seconds_read,
    seconds_transform = r.seconds_transform, seconds_load = r.seconds_load, error = r.error,
    run_id = $run_id, processed_at = $now
FROM load_record r
WHERE etl_file.file_id = r.file_id
"""

# Its aggregates, from its facts. Distinct customers are counted a share of the
# customer keys at a time (the shares are disjoint, so their counts add up), so the
# set being counted stays small however large the file.
_PART_AGGREGATES = """
INSERT INTO agg_product_day
SELECT file_id, date_key, branch_key, product_key, count(*)::INTEGER, sum(unit_price)
FROM fact_sale_item WHERE file_id = $file_id
GROUP BY file_id, date_key, branch_key, product_key;
INSERT INTO agg_sale_hour
SELECT file_id, date_key, branch_key, (time_key // 100)::SMALLINT, count(*)::INTEGER, sum(item_count)::INTEGER,
       sum(total)
FROM fact_sale WHERE file_id = $file_id
GROUP BY file_id, date_key, branch_key, time_key // 100;
CREATE OR REPLACE TEMP TABLE part_customer_day (date_key INTEGER, branch_key BIGINT, customers BIGINT)
"""
_PART_CUSTOMERS = """
INSERT INTO part_customer_day
SELECT date_key, branch_key, count(DISTINCT customer_key) FROM fact_sale
WHERE file_id = $file_id AND customer_key IS NOT NULL AND (customer_key % $shares + $shares) % $shares = $share
GROUP BY date_key, branch_key
"""
_PART_CUSTOMER_DAYS = """
INSERT INTO agg_customer_day
SELECT $file_id, date_key, branch_key, sum(customers)::INTEGER FROM part_customer_day GROUP BY date_key, branch_key
"""
CUSTOMERS_PER_SHARE = 2_000_000

_RECORD_COLUMNS = [
    ("file_id", "BIGINT"), ("status", "VARCHAR"), ("format", "VARCHAR"), ("branch_id", "VARCHAR"),
    ("business_date", "DATE"), ("rows_read", "INTEGER"), ("rows_loaded", "INTEGER"), ("rows_rejected", "INTEGER"),
    ("rows_ignored", "INTEGER"), ("items_loaded", "INTEGER"), ("seconds_read", "DOUBLE"),
    ("seconds_transform", "DOUBLE"), ("seconds_load", "DOUBLE"), ("error", "VARCHAR"), ("replaces", "BIGINT"),
]


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back what can be; a failed COMMIT (a full disk, say) has already ended the
    transaction, and its error, not the rollback's, is the one to report."""
    with suppress(duckdb.Error):
        con.execute("ROLLBACK").fetchall()


def _translate(exc: duckdb.Error, path: str) -> WarehouseError:
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


class DuckDBLoadSession(LoadSession):
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._dimension_lock = threading.Lock()

    def _run(self, sql: str, params: Any = None) -> list[tuple]:
        return self.con.execute(sql, params).fetchall()

    def start_run(self, command: str) -> int:
        (run_id,) = self._run("SELECT nextval('etl_run_id_seq')")[0]
        self._run(
            "INSERT INTO etl_run (run_id, command, started_at, status, version) VALUES (?, ?, ?, 'running', ?)",
            [run_id, command, datetime.now(), __version__],
        )
        return run_id

    def finish_run(self, run_id: int, totals: RunTotals, status: str, error: str | None = None) -> None:
        self._run(
            """UPDATE etl_run SET finished_at = ?, status = ?, files_seen = ?, files_loaded = ?, files_failed = ?,
                   files_skipped = ?, files_replaced = ?, rows_loaded = ?, rows_rejected = ?, bytes_read = ?,
                   seconds = ?, error = ?
               WHERE run_id = ?""",
            [datetime.now(), status, totals.files_seen, totals.files_loaded, totals.files_failed,
             totals.files_skipped, totals.files_replaced, totals.rows_loaded, totals.rows_rejected,
             totals.bytes_read, totals.seconds, error, run_id],
        )

    @contextmanager
    def ledger_transaction(self) -> Iterator[None]:
        # One process at a time holds a DuckDB file, and its engines share this
        # connection under the caller's lock: a transaction is all it takes.
        self._run("BEGIN TRANSACTION")
        try:
            yield
            self._run("COMMIT")
        except BaseException:
            _rollback(self.con)
            raise

    def lookup(self, files: Sequence[NewFile]) -> list[LedgerEntry]:
        # No other process can be loading into this file: every claim left in status
        # `loading` by another run is a dead one (claim_live stays False).
        if not files:
            return []
        temp_table(self.con, "lookup_file", [("location", "VARCHAR"), ("sha256", "VARCHAR")],
                   [(f.location, f.sha256) for f in files])
        rows = self._run(
            """SELECT file_id, location, content_sha256, status, run_id FROM etl_file
               WHERE location IN (SELECT location FROM lookup_file)
                  OR content_sha256 IN (SELECT sha256 FROM lookup_file)
               ORDER BY file_id"""
        )
        return [LedgerEntry(*row) for row in rows]

    def _insert_files(self, rows: Sequence[tuple], run_id: int) -> list[int]:
        """New ledger rows in one statement; their ids, in the order given."""
        if not rows:
            return []
        temp_table(
            self.con, "new_file",
            [("n", "INTEGER"), ("location", "VARCHAR"), ("sha256", "VARCHAR"), ("size", "BIGINT"), ("etag", "VARCHAR"),
             ("status", "VARCHAR"), ("copy_of", "BIGINT"), ("error", "VARCHAR")],
            [(n, *row) for n, row in enumerate(rows)],
        )
        now = datetime.now()
        ids = self._run(
            """INSERT INTO etl_file (file_id, location, content_sha256, size_bytes, etag, status, copy_of, error,
                                     run_id, discovered_at, claimed_at, processed_at)
               SELECT nextval('etl_file_id_seq'), location, sha256, size, etag, status, copy_of, error, ?, ?, ?,
                      CASE WHEN status = 'loading' THEN NULL ELSE ?::TIMESTAMP END
               FROM (SELECT * FROM new_file ORDER BY n)
               RETURNING file_id, location""",
            [run_id, now, now, now],
        )
        by_location = dict((location, file_id) for file_id, location in ids)
        return [by_location[row[0]] for row in rows]

    def take_over(self, file_ids: Sequence[int], run_id: int) -> None:
        if file_ids:
            self._run("UPDATE etl_file SET run_id = ?, claimed_at = ? WHERE file_id IN (SELECT unnest(?::BIGINT[]))",
                      [run_id, datetime.now(), list(file_ids)])

    def claim(self, files: Sequence[NewFile], run_id: int) -> list[int]:
        return self._insert_files([(f.location, f.sha256, f.size, f.etag, "loading", None, None) for f in files],
                                  run_id)

    def record_copies(self, copies: Sequence[tuple[NewFile, int]], run_id: int) -> None:
        self._insert_files(
            [(f.location, f.sha256, f.size, f.etag, "skipped", original, f"same content as file {original}")
             for f, original in copies],
            run_id,
        )

    def load(self, engine: Engine, records: Sequence[FileRecord], run_id: int) -> None:
        con = engine.con  # the connection that holds the batch's staged tables
        _stage_records(con, records)
        # Rows to clear: an earlier load of these same versions, and the versions they replace.
        temp_table(con, "load_cleanup", [("file_id", "BIGINT")], [(file_id,) for file_id in cleanup(records)])
        params = {"run_id": run_id, "now": datetime.now(), "no_key": NO_KEY}
        self.load_dimensions(engine, params)
        self._transaction(con, _LOAD_FACTS + ";\n" + _LEDGER, params)

    def load_dimensions(self, engine: Engine, params: dict[str, Any]) -> None:
        with self._dimension_lock:
            self._transaction(engine.con, _LOAD_DIMENSIONS, params)

    @contextmanager
    def load_parts(self, engine: Engine, file_id: int, run_id: int, clear_first: bool) -> Iterator[PartLoad]:
        con = self.con.cursor()
        folder = tempfile.mkdtemp(prefix="cafe-etl-")  # 0700: private to this user
        parts = DuckDBPartLoad(self, con, folder, file_id, run_id)
        try:
            con.execute(f"USE {_ALIAS}").fetchall()
            con.execute("BEGIN TRANSACTION").fetchall()
            if clear_first:
                _delete_rows_of(con, file_id)
            yield parts
        finally:
            if not parts.committed:
                _rollback(con)
            con.close()
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _transaction(con: duckdb.DuckDBPyConnection, script: str, params: dict[str, Any]) -> None:
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            _statements(con, script, params)
            con.execute("COMMIT").fetchall()
        except BaseException:
            _rollback(con)
            raise

    def record_load_seconds(self, seconds: Sequence[tuple[int, float]]) -> None:
        if seconds:
            self._run(
                """UPDATE etl_file SET seconds_load = t.seconds
                   FROM (SELECT unnest(?::BIGINT[]) AS file_id, unnest(?::DOUBLE[]) AS seconds) t
                   WHERE etl_file.file_id = t.file_id""",
                [[f for f, _ in seconds], [s for _, s in seconds]],
            )


def _statements(con: duckdb.DuckDBPyConnection, script: str, params: dict[str, Any]) -> None:
    for statement in split_statements(script):
        used = {k: v for k, v in params.items() if f"${k}" in statement}
        con.execute(statement, used or None).fetchall()


def _delete_rows_of(con: duckdb.DuckDBPyConnection, file_id: int) -> None:
    for table in FILE_TABLES:
        con.execute(f"DELETE FROM {table} WHERE file_id = ?", [file_id]).fetchall()


def _stage_records(con: duckdb.DuckDBPyConnection, records: Sequence[FileRecord]) -> None:
    temp_table(
        con, "load_record", _RECORD_COLUMNS,
        [
            (r.file_id, r.status, r.format, r.branch_id, r.business_date, r.rows_read, r.rows_loaded,
             r.rows_rejected, r.rows_ignored, r.items_loaded, r.seconds_read, r.seconds_transform,
             r.seconds_load, r.error, r.replaces)
            for r in records
        ],
    )


class DuckDBPartLoad(PartLoad):
    def __init__(self, session: DuckDBLoadSession, con: duckdb.DuckDBPyConnection, folder: str, file_id: int,
                 run_id: int) -> None:
        self.session = session
        self.con = con  # holds the file's transaction
        self.folder = folder
        self.file_id = file_id
        self.run_id = run_id
        self.committed = False

    def add(self, engine: Engine) -> None:
        self.session.load_dimensions(engine, {"no_key": NO_KEY})
        for table, select in _ROWS.items():
            path = os.path.join(self.folder, f"{table}.parquet")
            engine.run(f"COPY ({select}) TO '{path}' (FORMAT parquet)",
                       {"run_id": self.run_id} if "$run_id" in select else None)
            self.con.execute(f"INSERT INTO {table} SELECT * FROM read_parquet(?)", [path]).fetchall()
            os.unlink(path)

    def finish(self, record: FileRecord) -> None:
        con, file_id = self.con, self.file_id
        if record.status == "loaded" and record.replaces is not None:
            _delete_rows_of(con, record.replaces)
        _statements(con, _PART_AGGREGATES, {"file_id": file_id})
        shares = record.rows_loaded // CUSTOMERS_PER_SHARE + 1
        for share in range(shares):
            _statements(con, _PART_CUSTOMERS, {"file_id": file_id, "shares": shares, "share": share})
        _statements(con, _PART_CUSTOMER_DAYS, {"file_id": file_id})
        _stage_records(con, [record])
        _statements(con, _LEDGER, {"run_id": self.run_id, "now": datetime.now()})
        con.execute("COMMIT").fetchall()
        self.committed = True



class _FileAccess:
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

    _all: dict[str, _FileAccess] = {}
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
    def of(cls, path: str) -> _FileAccess:
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



atexit.register(_FileAccess.close_all)

class DuckDBReader(Reader):
    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, time_limit: float | None = None) -> None:
        self.con = con
        self.path = path
        self.time_limit = time_limit

    def query(self, sql: str, params: Sequence[Any] = (), *, max_rows: int | None = None) -> list[tuple]:
        # DuckDB has no statement timeout: a timer interrupts the connection instead.
        timer = threading.Timer(self.time_limit, self.con.interrupt) if self.time_limit else None
        try:
            if timer:
                timer.start()
            return fetch_limited(self.con.execute(sql, list(params)), max_rows)
        except duckdb.InterruptException:
            raise QueryTimeout(f"a query ran past its {self.time_limit:g} s limit and was cancelled") from None
        except duckdb.Error as exc:
            raise _translate(exc, self.path) from None
        finally:
            if timer:
                timer.cancel()


class DuckDBWarehouse(Warehouse):
    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"duckdb:///{path}"

    def describe(self) -> str:
        return self.path

    def _schema(self) -> list[str]:
        folder = resources.files("cafe_etl.warehouse") / "schema"
        statements = list(split_statements((folder / "duckdb.sql").read_text()))
        statements += list(split_statements(_SEED))
        statements += list(split_statements((folder / "marts.sql").read_text()))
        return statements

    @staticmethod
    def _upgrade() -> list[str]:
        return list(split_statements((resources.files("cafe_etl.warehouse") / "schema" / "upgrade.sql").read_text()))

    @contextmanager
    def load_session(self, pool: EnginePool) -> Iterator[DuckDBLoadSession]:
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise WarehouseError(f"cannot create the folder for warehouse {self.path}: {exc.strerror}") from None
        with _FileAccess.of(self.path).writing():
            yield from self._attached(pool)

    def _attach(self, control: duckdb.DuckDBPyConnection) -> None:
        """Attach the file for writing. While another process reads or writes it (the
        dashboard's short-lived reads, say), try again for up to ``WRITER_WAIT`` seconds,
        announcing the wait in a marker file so that readers step aside."""
        deadline = time.monotonic() + WRITER_WAIT
        marker = _load_wanted_marker(self.path)
        try:
            while True:
                try:
                    control.execute(f"ATTACH ? AS {_ALIAS}", [os.path.abspath(self.path)]).fetchall()
                    return
                except duckdb.Error as exc:
                    if not isinstance(_translate(exc, self.path), WarehouseBusy) or time.monotonic() >= deadline:
                        raise
                with suppress(OSError):
                    Path(marker).touch()
                time.sleep(0.1 + 0.2 * random.random())
        finally:
            with suppress(OSError):
                os.unlink(marker)

    def _attached(self, pool: EnginePool) -> Iterator[DuckDBLoadSession]:
        control = pool.cursor()
        try:
            self._attach(control)
            # Checkpoint when the write-ahead log holds this much, not at DuckDB's 16 MB:
            # each checkpoint rewrites every changed table (the customers, a million
            # rows), so a run checkpoints a few times, and once more when it detaches.
            control.execute(f"SET checkpoint_threshold = '{CHECKPOINT_AFTER}'").fetchall()
            for con in [control] + [engine.con for engine in pool.engines]:
                con.execute(f"USE {_ALIAS}").fetchall()
            self._ensure_schema(control)
        except duckdb.Error as exc:
            self._detach(control, pool)
            raise _translate(exc, self.path) from None
        try:
            yield DuckDBLoadSession(control)
        except duckdb.Error as exc:
            raise _translate(exc, self.path) from None
        finally:
            self._detach(control, pool)

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("BEGIN TRANSACTION").fetchall()
        for statement in self._schema():
            con.execute(statement).fetchall()
        if not con.execute("SELECT 1 FROM etl_schema WHERE version = ?", [SCHEMA_VERSION]).fetchall():
            for statement in self._upgrade():
                con.execute(statement).fetchall()
            con.execute("INSERT INTO etl_schema VALUES (?, ?)", [SCHEMA_VERSION, datetime.now()]).fetchall()
        con.execute("COMMIT").fetchall()

    @staticmethod
    def _detach(control: duckdb.DuckDBPyConnection, pool: EnginePool) -> None:
        for con in [engine.con for engine in pool.engines] + [control]:
            with suppress(duckdb.Error):
                con.execute("USE memory").fetchall()
        with suppress(duckdb.Error):
            control.execute(f"DETACH DATABASE IF EXISTS {_ALIAS}").fetchall()
        control.close()

    @contextmanager
    def reader(self, time_limit: float | None = None, wait: float = 0.0) -> Iterator[DuckDBReader]:
        if not os.path.exists(self.path):
            raise WarehouseMissing(f"no warehouse at {self.path}: run `cafe-etl ingest` (or `cafe-etl demo`) first")
        deadline = time.monotonic() + wait
        access = _FileAccess.of(self.path)
        with access.reading(wait):
            self._step_aside_for_a_loader(access, deadline)
            con = self._connect_read_only(deadline)
            access.anchor()
            try:
                created = con.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'etl_file'").fetchone()[0]
            except duckdb.Error as exc:
                con.close()
                raise _translate(exc, self.path) from None
            if not created:
                con.close()
                raise WarehouseMissing(f"no warehouse in {self.path} yet: run `cafe-etl ingest` first")
            try:
                yield DuckDBReader(con, self.path, time_limit)
            finally:
                con.close()

    def _step_aside_for_a_loader(self, access: _FileAccess, deadline: float) -> None:
        """A loader in another process waits for the file: let it go (close the anchor,
        open nothing) until it has it, or until ``deadline`` ("busy")."""
        while _load_wanted(self.path):
            access.release_anchor()
            if time.monotonic() >= deadline:
                raise WarehouseBusy(f"warehouse {self.path} is in use by another process (a load is starting); "
                                    "try again when it has finished")
            time.sleep(0.05)

    def _connect_read_only(self, deadline: float) -> duckdb.DuckDBPyConnection:
        """A read-only connection; while another process loads (and holds the file),
        try again until ``deadline``."""
        while True:
            try:
                con = duckdb.connect(self.path, read_only=True)
                con.execute("SET enable_progress_bar = false").fetchall()
                return con
            except duckdb.Error as exc:
                error = _translate(exc, self.path)
                if not isinstance(error, WarehouseBusy) or time.monotonic() >= deadline:
                    raise error from None
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
