"""The embedded DuckDB warehouse: one file, written by one process at a time.

Loading attaches the warehouse file to the processing engine, so a staged batch
moves into the star schema with plain ``INSERT … SELECT`` inside one transaction:
no rows cross into Python. Reads use short-lived read-only connections.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from importlib import resources
from typing import Any

import duckdb

from cafe_etl.engine import Engine, EnginePool, temp_table
from cafe_etl.errors import ContentFault, QueryTimeout, WarehouseError, WarehouseMissing
from cafe_etl.rules import FileStatus
from cafe_etl.warehouse.base import (
    FILE_TABLES,
    SCHEMA_VERSION,
    FileRecord,
    LedgerEntry,
    NewFile,
    PartLoad,
    Reader,
    Warehouse,
    cleanup,
    fetch_limited,
    ledger_update,
    record_columns,
    record_values,
    split_statements,
)
from cafe_etl.warehouse.duckdb_access import (
    WRITER_WAIT,
    FileAccess,
    attach_for_writing,
    check_path,
    connect_read_only,
    private_files,
    step_aside_for_a_loader,
    translate,
)
from cafe_etl.warehouse.ledger_sql import SqlLedger

_ALIAS = "wh"
CHECKPOINT_AFTER = "256MB"
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
_LEDGER = ledger_update(now="$now", run_id="$run_id")

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



def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back what can be; a failed COMMIT (a full disk, say) has already ended the
    transaction, and its error, not the rollback's, is the one to report."""
    with suppress(duckdb.Error):
        con.execute("ROLLBACK").fetchall()


# Errors that a value in the batch can cause: the pipeline narrows them down to a file.
_REFUSED = (duckdb.DataError, duckdb.IntegrityError, duckdb.InvalidInputException)


@contextmanager
def _loading(path: str) -> Iterator[None]:
    """Errors while a batch is loaded, in the pipeline's terms: running out of memory
    stays as it is (the batch may be retried alone), a refused value is the batch's
    content's doing (``ContentFault``), anything else is the warehouse's."""
    try:
        yield
    except duckdb.OutOfMemoryException:
        raise
    except _REFUSED as exc:
        raise ContentFault("loaded") from exc
    except duckdb.Error as exc:
        raise translate(exc, path) from None


class DuckDBLoadSession(SqlLedger):
    def __init__(self, con: duckdb.DuckDBPyConnection, path: str) -> None:
        self.con = con
        self.path = path
        self._dimension_lock = threading.Lock()

    def _run(self, sql: str, params: Any = None) -> list[tuple]:
        return self.con.execute(sql, params).fetchall()

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

    def load(self, engine: Engine, records: Sequence[FileRecord], run_id: int) -> None:
        con = engine.con  # the connection that holds the batch's staged tables
        with _loading(self.path):
            _stage_records(con, records)
            # Rows to clear: an earlier load of these same versions, and the versions they replace.
            temp_table(con, "load_cleanup", [("file_id", "BIGINT")], [(file_id,) for file_id in cleanup(records)])
            params = {"run_id": run_id, "now": datetime.now(), "no_key": NO_KEY}
            self.load_dimensions(engine, params)
            self._transaction(con, _LOAD_FACTS + ";\n" + _LEDGER, params)

    def load_dimensions(self, engine: Engine, params: dict[str, Any]) -> None:
        with _loading(self.path), self._dimension_lock:
            self._transaction(engine.con, _LOAD_DIMENSIONS, params)

    @contextmanager
    def load_parts(self, engine: Engine, file_id: int, run_id: int, clear_first: bool) -> Iterator[PartLoad]:
        con = self.con.cursor()
        folder = tempfile.mkdtemp(prefix="cafe-etl-")  # 0700: private to this user
        parts = DuckDBPartLoad(self, con, folder, file_id, run_id)
        try:
            with _loading(self.path):
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

def _statements(con: duckdb.DuckDBPyConnection, script: str, params: dict[str, Any]) -> None:
    for statement in split_statements(script):
        used = {k: v for k, v in params.items() if f"${k}" in statement}
        con.execute(statement, used or None).fetchall()


def _delete_rows_of(con: duckdb.DuckDBPyConnection, file_id: int) -> None:
    for table in FILE_TABLES:
        con.execute(f"DELETE FROM {table} WHERE file_id = ?", [file_id]).fetchall()


def _stage_records(con: duckdb.DuckDBPyConnection, records: Sequence[FileRecord]) -> None:
    temp_table(con, "load_record", record_columns(), [record_values(r) for r in records])


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
        with _loading(self.session.path):
            for table, select in _ROWS.items():
                path = os.path.join(self.folder, f"{table}.parquet")
                engine.run(f"COPY ({select}) TO '{path}' (FORMAT parquet)",
                           {"run_id": self.run_id} if "$run_id" in select else None)
                self.con.execute(f"INSERT INTO {table} SELECT * FROM read_parquet(?)", [path]).fetchall()
                os.unlink(path)

    def finish(self, record: FileRecord) -> None:
        with _loading(self.session.path):
            self._finish(record)

    def _finish(self, record: FileRecord) -> None:
        con, file_id = self.con, self.file_id
        if record.status == FileStatus.LOADED and record.replaces is not None:
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



class DuckDBReader(Reader):
    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, time_limit: float | None = None) -> None:
        self.con = con
        self.path = path
        self.time_limit = time_limit

    def limit_time(self, seconds: float) -> None:
        if self.time_limit:
            self.time_limit = min(self.time_limit, seconds)

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
            raise translate(exc, self.path) from None
        finally:
            if timer:
                timer.cancel()


class DuckDBWarehouse(Warehouse):
    def __init__(self, path: str, lock_wait: float | None = None) -> None:
        self.path = path
        self.url = f"duckdb:///{path}"
        self.lock_wait = WRITER_WAIT if lock_wait is None else lock_wait

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
        check_path(self.path)
        # The warehouse, its write-ahead log and any folder made for them are private
        # to the loader's user (0600, 0700), whatever the umask.
        with private_files():
            folder = os.path.dirname(os.path.abspath(self.path))
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                raise WarehouseError(f"cannot create the folder for warehouse {self.path}: {exc.strerror}") from None
            with FileAccess.of(self.path).writing():
                yield from self._attached(pool)

    def _attached(self, pool: EnginePool) -> Iterator[DuckDBLoadSession]:
        control = pool.cursor()
        try:
            attach_for_writing(control, self.path, _ALIAS, self.lock_wait)
            # Checkpoint when the write-ahead log holds this much, not at DuckDB's 16 MB:
            # each checkpoint rewrites every changed table (the customers, a million
            # rows), so a run checkpoints a few times, and once more when it detaches.
            control.execute(f"SET checkpoint_threshold = '{CHECKPOINT_AFTER}'").fetchall()
            for con in [control] + [engine.con for engine in pool.engines]:
                con.execute(f"USE {_ALIAS}").fetchall()
            self._ensure_schema(control)
        except duckdb.Error as exc:
            self._detach(control, pool)
            raise translate(exc, self.path) from None
        except BaseException:
            self._detach(control, pool)
            raise
        try:
            yield DuckDBLoadSession(control, self.path)
        except duckdb.Error as exc:
            raise translate(exc, self.path) from None
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
        access = FileAccess.of(self.path)
        with access.reading(wait):
            step_aside_for_a_loader(access, self.path, deadline)
            con = connect_read_only(self.path, deadline)
            access.anchor()
            try:
                created = con.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'etl_file'").fetchone()[0]
            except duckdb.Error as exc:
                con.close()
                raise translate(exc, self.path) from None
            if not created:
                con.close()
                raise WarehouseMissing(f"no warehouse in {self.path} yet: run `cafe-etl ingest` first")
            try:
                yield DuckDBReader(con, self.path, time_limit)
            finally:
                con.close()
