"""The PostgreSQL warehouse: a server that many loaders write to and many readers read.

DuckDB stays the processing engine. A staged batch leaves the engine as CSV (written
by DuckDB itself into a private temporary folder: the staged rows hold no personal
data) and enters PostgreSQL with ``COPY``, never row by row:

* new dimension rows are copied into temporary tables and merged with
  ``INSERT … WHERE NOT EXISTS`` while the dimension tables are locked against other
  mergers, in a transaction of their own (short, and harmless if the batch then fails);
* the batch itself is one transaction: rows of replaced versions deleted, facts and
  rejects copied in, the ledger updated. Fact appends never conflict, so loaders copy
  at the same time.

Claims are made under a lock on ``etl_file`` (DESIGN §4: one loader per file).
Deadlocks, serialisation failures and dropped connections are retried with backoff.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from cafe_etl.engine import Engine, EnginePool
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
from cafe_etl.warehouse.ledger_sql import SqlLedger

# Each run holds the advisory lock (_RUN_LOCK_CLASS, run_id) while it lives; a claim
# whose run holds no such lock belongs to a loader that died, and is taken over.
_RUN_LOCK_CLASS = 7163
RETRIES = 6
_SCHEMA_LOCK = 7_163_320_001  # pg_advisory_lock key: one process creates or upgrades the schema
_TRANSIENT = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.LockNotAvailable,
              psycopg.OperationalError)
_DIMENSION_TABLES = ("dim_date", "dim_branch", "dim_product")

T = TypeVar("T")

# Engine relation -> (warehouse table, columns): what a batch copies into PostgreSQL.
_DIMENSIONS = {
    "out_date": ("stg_date", "date_key, date"),
    "out_branch": ("stg_branch", "branch_key, branch_id, name, first_seen"),
    "out_product": ("stg_product", "product_key, size, name, flavour"),
}
_CUSTOMERS = {"out_customer": ("stg_customer", "customer_key, first_seen, first_branch_key")}
_FACTS = {
    "out_sale": ("fact_sale", "file_id, source_row, date_key, time_key, branch_key, payment_key, customer_key, "
                              "item_count, total"),
    "out_item": ("fact_sale_item", "file_id, source_row, line_number, product_key, unit_price, date_key, branch_key"),
    "out_reject": ("etl_reject", "file_id, source_row, reason_code, detail, row_data, run_id"),
    "out_product_day": ("agg_product_day", "file_id, date_key, branch_key, product_key, quantity, revenue"),
    "out_sale_hour": ("agg_sale_hour", "file_id, date_key, branch_key, hour, transactions, items, revenue"),
    "out_customer_day": ("agg_customer_day", "file_id, date_key, branch_key, customers"),
}

_STAGING = """
CREATE TEMP TABLE stg_date (date_key INTEGER, date DATE) ON COMMIT DROP;
CREATE TEMP TABLE stg_branch (branch_key BIGINT, branch_id VARCHAR, name VARCHAR, first_seen DATE) ON COMMIT DROP;
CREATE TEMP TABLE stg_product (product_key BIGINT, size VARCHAR, name VARCHAR, flavour VARCHAR) ON COMMIT DROP
"""

_MERGE_DIMENSIONS = """
INSERT INTO dim_date
SELECT s.date_key, s.date, extract(year FROM s.date), extract(quarter FROM s.date), extract(month FROM s.date),
       trim(to_char(s.date, 'Month')), extract(week FROM s.date), extract(isodow FROM s.date),
       trim(to_char(s.date, 'Day')), extract(isodow FROM s.date) >= 6
FROM stg_date s WHERE NOT EXISTS (SELECT 1 FROM dim_date d WHERE d.date_key = s.date_key);
INSERT INTO dim_branch
SELECT s.branch_key, s.branch_id, s.name, s.first_seen
FROM stg_branch s WHERE NOT EXISTS (SELECT 1 FROM dim_branch d WHERE d.branch_key = s.branch_key);
UPDATE dim_branch SET name = s.name
FROM stg_branch s
WHERE dim_branch.branch_key = s.branch_key AND dim_branch.name = lower(dim_branch.name) AND s.name <> lower(s.name);
UPDATE dim_branch SET first_seen = s.first_seen
FROM stg_branch s
WHERE dim_branch.branch_key = s.branch_key AND (dim_branch.first_seen IS NULL OR s.first_seen < dim_branch.first_seen);
INSERT INTO dim_product
SELECT s.product_key, s.size, s.name, s.flavour
FROM stg_product s WHERE NOT EXISTS (SELECT 1 FROM dim_product d WHERE d.product_key = s.product_key)
"""

# Customers are many (a month of a large chain: a million): merged without the lock,
# each key settled by the primary key itself, in key order so that two loaders never
# wait on each other crosswise.
_MERGE_CUSTOMERS = """
INSERT INTO dim_customer (customer_key, first_seen, first_branch_key)
SELECT customer_key, first_seen, first_branch_key FROM stg_customer ORDER BY customer_key
ON CONFLICT (customer_key) DO UPDATE SET first_seen = excluded.first_seen, first_branch_key = excluded.first_branch_key
WHERE excluded.first_seen < dim_customer.first_seen
   OR (excluded.first_seen = dim_customer.first_seen
       AND excluded.first_branch_key < coalesce(dim_customer.first_branch_key, 9223372036854775807))
"""

_RECORD_TABLE = ("CREATE TEMP TABLE load_record ("
                 + ", ".join(f"{name} {kind}" for name, kind in record_columns()) + ") ON COMMIT DROP")

_LEDGER_UPDATE = ledger_update(now="%(now)s", run_id="%(run_id)s")


# A file loaded in parts: its aggregates, from its facts, in the file's transaction.
_PART_FACTS = {k: _FACTS[k] for k in ("out_sale", "out_item", "out_reject")}
_PART_AGGREGATES = """
INSERT INTO agg_product_day
SELECT file_id, date_key, branch_key, product_key, count(*), sum(unit_price)
FROM fact_sale_item WHERE file_id = %(file_id)s
GROUP BY file_id, date_key, branch_key, product_key;
INSERT INTO agg_sale_hour
SELECT file_id, date_key, branch_key, time_key / 100, count(*), sum(item_count), sum(total)
FROM fact_sale WHERE file_id = %(file_id)s
GROUP BY file_id, date_key, branch_key, time_key / 100;
INSERT INTO agg_customer_day
SELECT file_id, date_key, branch_key, count(DISTINCT customer_key)
FROM fact_sale WHERE file_id = %(file_id)s AND customer_key IS NOT NULL
GROUP BY file_id, date_key, branch_key
"""


def to_pyformat(sql: str) -> str:
    """Shared SQL uses ``?`` placeholders; psycopg wants ``%s`` (and a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _retrying(attempt: Callable[[], T], on_retry: Callable[[], None] | None = None) -> T:
    """Run ``attempt``; on a deadlock, serialisation failure or lost connection, wait and again."""
    for n in range(RETRIES):
        try:
            return attempt()
        except _TRANSIENT:
            if n == RETRIES - 1:
                raise
            time.sleep(min(5.0, 0.1 * 2**n) * (0.5 + random.random()))
            if on_retry:
                on_retry()
    raise AssertionError("unreachable")


class PostgresWarehouse(Warehouse):
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            # libpq may quote the part it could not read, which can be the password alone.
            password = re.search(r"://[^:/@\s]*:([^@\s]*)@", url)
            said = str(exc).replace(password.group(1), "***") if password and password.group(1) else str(exc)
            raise WarehouseError(f"cannot read the PostgreSQL URL: {said}") from None

    def describe(self) -> str:
        """The URL without its password, fit for logs and summaries."""
        p = self.params
        user = f"{p['user']}@" if p.get("user") else ""
        port = f":{p['port']}" if p.get("port") else ""
        return f"postgresql://{user}{p.get('host', '')}{port}/{p.get('dbname', '')}"

    def connect(self, *, read_only: bool = False) -> psycopg.Connection:
        try:
            con = psycopg.connect(self.url, autocommit=True, connect_timeout=10, application_name="cafe-etl")
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WarehouseError(f"cannot connect to the warehouse {self.describe()}: {first}") from None
        if read_only:
            con.execute("SET default_transaction_read_only = on")
        return con

    def _schema(self) -> list[str]:
        folder = resources.files("cafe_etl.warehouse") / "schema"
        return [*split_statements((folder / "postgres.sql").read_text()),
                *split_statements((folder / "upgrade.sql").read_text()),
                *split_statements((folder / "marts.sql").read_text())]

    def ensure_schema(self, con: psycopg.Connection) -> None:
        # Concurrent "CREATE … IF NOT EXISTS" can still collide in the catalog: one at a time.
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
            if con.execute("SELECT to_regclass('etl_schema')").fetchone()[0] is not None and con.execute(
                    "SELECT 1 FROM etl_schema WHERE version = %s", [SCHEMA_VERSION]).fetchone():
                return
            for statement in self._schema():
                con.execute(statement)
            con.execute("INSERT INTO etl_schema VALUES (%s, %s)", [SCHEMA_VERSION, datetime.now()])

    @contextmanager
    def load_session(self, pool: EnginePool) -> Iterator[PostgresLoadSession]:
        control = self.connect()
        folder = tempfile.mkdtemp(prefix="cafe-etl-")  # 0700: private to this user
        session = PostgresLoadSession(self, control, folder)
        try:
            self.ensure_schema(control)
            yield session
        except psycopg.Error as exc:
            raise _translate(exc, self) from None
        finally:
            session.close()
            shutil.rmtree(folder, ignore_errors=True)

    @contextmanager
    def reader(self, time_limit: float | None = None, wait: float = 0.0) -> Iterator[PostgresReader]:
        del wait  # loaders never lock readers out of PostgreSQL
        con = self.connect(read_only=True)
        try:
            if time_limit:
                # The server cancels a query past the limit; it never runs on unwatched.
                con.execute("SELECT set_config('statement_timeout', %s, false)", [f"{int(time_limit * 1000)}ms"])
            if con.execute("SELECT to_regclass('etl_file')").fetchone()[0] is None:
                raise WarehouseMissing(f"no warehouse at {self.describe()}: run `cafe-etl ingest` first")
            yield PostgresReader(con, self, time_limit)
        finally:
            con.close()


@contextmanager
def _refusals(warehouse: PostgresWarehouse) -> Iterator[None]:
    """Errors while a batch is loaded, in the pipeline's terms: a value the server refuses
    (class 22, data exception; class 23, integrity) is the batch's content's doing, and
    the pipeline narrows it down to a file (``ContentFault``); anything else is the
    warehouse's."""
    try:
        yield
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        raise ContentFault("loaded") from exc
    except psycopg.Error as exc:
        raise _translate(exc, warehouse) from None


def _translate(exc: psycopg.Error, warehouse: PostgresWarehouse) -> WarehouseError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return WarehouseError(f"warehouse {warehouse.describe()}: {text}")


class PostgresReader(Reader):
    def __init__(self, con: psycopg.Connection, warehouse: PostgresWarehouse, time_limit: float | None = None) -> None:
        self.con = con
        self.warehouse = warehouse
        self.time_limit = time_limit

    def regex_match(self, expression: str) -> str:
        return f"{expression} ~ ?"

    # The server's statement_timeout is only lowered when what is left of an answer's
    # limit falls well below it: the first query of an answer costs no round trip.
    _LOWER_BY = 0.5

    def limit_time(self, seconds: float) -> None:
        if self.time_limit and seconds < self.time_limit - self._LOWER_BY:
            self.time_limit = max(seconds, 0.001)
            try:
                self.con.execute("SELECT set_config('statement_timeout', %s, false)",
                                 [f"{int(self.time_limit * 1000)}ms"])
            except psycopg.Error as exc:
                raise _translate(exc, self.warehouse) from None

    def query(self, sql: str, params: Sequence[Any] = (), *, max_rows: int | None = None) -> list[tuple]:
        try:
            with self.con.cursor() as cursor:
                cursor.execute(to_pyformat(sql), list(params) or None)
                return fetch_limited(cursor, max_rows)
        except pg_errors.QueryCanceled as exc:
            if self.time_limit:
                raise QueryTimeout(f"a query ran past its {self.time_limit:g} s limit and was cancelled") from None
            raise _translate(exc, self.warehouse) from None
        except psycopg.Error as exc:
            raise _translate(exc, self.warehouse) from None


class PostgresLoadSession(SqlLedger):
    """The control connection keeps the ledger; each engine loads through its own connection."""

    def __init__(self, warehouse: PostgresWarehouse, control: psycopg.Connection, folder: str) -> None:
        self.warehouse = warehouse
        self.con = control
        self.folder = folder
        self._loaders: dict[int, psycopg.Connection] = {}
        self._guard = threading.Lock()

    def close(self) -> None:
        for con in [*self._loaders.values(), self.con]:
            con.close()

    def _loader(self, engine: Engine, fresh: bool = False) -> psycopg.Connection:
        with self._guard:
            con = self._loaders.get(id(engine))
            if con is None or fresh or con.closed:
                if con is not None:
                    con.close()
                con = self._loaders[id(engine)] = self.warehouse.connect()
            return con

    # Runs and the ledger ------------------------------------------------------

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cursor = self.con.execute(to_pyformat(sql), list(params) or None)
        return cursor.fetchall() if cursor.description else []

    def _hold_run(self, run_id: int) -> None:
        # Held by this connection while the run lives: the server lets go of it when the
        # loader dies, however it dies, so its claims are known dead at once.
        self.con.execute("SELECT pg_advisory_lock(%s, %s)", [_RUN_LOCK_CLASS, run_id])

    @contextmanager
    def ledger_transaction(self) -> Iterator[None]:
        # Readers are not blocked; another loader's lookup-and-claim waits for this one.
        with self.con.transaction():
            self.con.execute("LOCK TABLE etl_file IN SHARE ROW EXCLUSIVE MODE")
            yield

    def lookup(self, files: Sequence[NewFile]) -> list[LedgerEntry]:
        if not files:
            return []
        rows = self.con.execute(
            """SELECT file_id, location, content_sha256, status, run_id,
                      status = 'loading' AND EXISTS (
                          SELECT 1 FROM pg_locks l
                          WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                            AND l.classid = %s AND l.objid::bigint = etl_file.run_id
                            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                      ) AS claim_live
               FROM etl_file
               WHERE location = ANY(%s) OR content_sha256 = ANY(%s)
               ORDER BY file_id""",
            [_RUN_LOCK_CLASS, [f.location for f in files], [f.sha256 for f in files if f.sha256]],
        ).fetchall()
        return [LedgerEntry(*row) for row in rows]

    def load(self, engine: Engine, records: Sequence[FileRecord], run_id: int) -> None:
        files = self._export(engine, run_id)
        try:
            self.load_dimensions(engine, files)
            with _refusals(self.warehouse):
                _retrying(lambda: self._load_batch(self._loader(engine), files, records, run_id),
                          on_retry=lambda: self._loader(engine, fresh=True))
        finally:
            for path in files.values():
                os.unlink(path)

    @contextmanager
    def load_parts(self, engine: Engine, file_id: int, run_id: int, clear_first: bool) -> Iterator[PartLoad]:
        con = self.warehouse.connect()  # holds the file's transaction from the first part to the last
        parts = PostgresPartLoad(self, con, file_id, run_id)
        try:
            con.execute("BEGIN")
            if clear_first:
                _delete_rows_of(con, [file_id])
            yield parts
        finally:
            if not parts.committed and not con.closed:
                with suppress(psycopg.Error):
                    con.execute("ROLLBACK")
            con.close()

    def load_dimensions(self, engine: Engine, files: dict[str, str]) -> None:
        with _refusals(self.warehouse):
            _retrying(lambda: self._load_dimensions(self._loader(engine), files),
                      on_retry=lambda: self._loader(engine, fresh=True))
            _retrying(lambda: self._load_customers(self._loader(engine), files),
                      on_retry=lambda: self._loader(engine, fresh=True))

    def _export(self, engine: Engine, run_id: int, relations: dict | None = None) -> dict[str, str]:
        """The staged relations as CSV files written by the engine itself."""
        files = {}
        relations = relations or (_DIMENSIONS | _CUSTOMERS | _FACTS)
        for relation, (_, columns) in relations.items():
            select = columns.replace("run_id", f"{int(run_id)} AS run_id")
            path = os.path.join(self.folder, f"{relation}-{id(engine)}.csv")
            engine.run(f"COPY (SELECT {select} FROM {relation}) TO '{path}' (FORMAT csv, HEADER false)")
            files[relation] = path
        return files

    @staticmethod
    def _copy_file(con: psycopg.Connection, table: str, columns: str, path: str) -> None:
        if os.path.getsize(path) == 0:
            return
        with con.cursor().copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT csv)") as copy, open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                copy.write(chunk)

    def _load_dimensions(self, con: psycopg.Connection, files: dict[str, str]) -> None:
        with con.transaction():
            for statement in split_statements(_STAGING):
                con.execute(statement)
            for relation, (table, columns) in _DIMENSIONS.items():
                self._copy_file(con, table, columns, files[relation])
            # One merger at a time, tables always in the same order: no duplicate key, no deadlock.
            con.execute(f"LOCK TABLE {', '.join(_DIMENSION_TABLES)} IN SHARE ROW EXCLUSIVE MODE")
            for statement in split_statements(_MERGE_DIMENSIONS):
                con.execute(statement)

    def _load_customers(self, con: psycopg.Connection, files: dict[str, str]) -> None:
        with con.transaction():
            con.execute("CREATE TEMP TABLE stg_customer "
                        "(customer_key BIGINT, first_seen DATE, first_branch_key BIGINT) ON COMMIT DROP")
            for relation, (table, columns) in _CUSTOMERS.items():
                self._copy_file(con, table, columns, files[relation])
            con.execute(_MERGE_CUSTOMERS)

    def _load_batch(self, con: psycopg.Connection, files: dict[str, str], records: Sequence[FileRecord],
                    run_id: int) -> None:
        clear = cleanup(records)
        with con.transaction():
            _delete_rows_of(con, clear)
            for relation, (table, columns) in _FACTS.items():
                self._copy_file(con, table, columns, files[relation])
            # The ledger last: its row locks are held for the shortest time.
            _write_ledger(con, records, run_id)


def _delete_rows_of(con: psycopg.Connection, file_ids: Sequence[int]) -> None:
    if file_ids:
        for table in FILE_TABLES:
            con.execute(f"DELETE FROM {table} WHERE file_id = ANY(%s)", [list(file_ids)])


def _write_ledger(con: psycopg.Connection, records: Sequence[FileRecord], run_id: int) -> None:
    con.execute(_RECORD_TABLE)
    with con.cursor().copy("COPY load_record FROM STDIN") as copy:
        for r in records:
            copy.write_row(record_values(r))
    for statement in split_statements(_LEDGER_UPDATE):
        con.execute(statement, {"now": datetime.now(), "run_id": run_id})


class PostgresPartLoad(PartLoad):
    def __init__(self, session: PostgresLoadSession, con: psycopg.Connection, file_id: int, run_id: int) -> None:
        self.session = session
        self.con = con
        self.file_id = file_id
        self.run_id = run_id
        self.committed = False

    def add(self, engine: Engine) -> None:
        files = self.session._export(engine, self.run_id, _DIMENSIONS | _CUSTOMERS | _PART_FACTS)
        try:
            self.session.load_dimensions(engine, files)
            with _refusals(self.session.warehouse):
                for relation, (table, columns) in _PART_FACTS.items():
                    self.session._copy_file(self.con, table, columns, files[relation])
        finally:
            for path in files.values():
                os.unlink(path)

    def finish(self, record: FileRecord) -> None:
        with _refusals(self.session.warehouse):
            self._finish(record)

    def _finish(self, record: FileRecord) -> None:
        con = self.con
        if record.status == FileStatus.LOADED and record.replaces is not None:
            _delete_rows_of(con, [record.replaces])
        for statement in split_statements(_PART_AGGREGATES):
            con.execute(statement, {"file_id": self.file_id})
        _write_ledger(con, [record], self.run_id)
        con.execute("COMMIT")
        self.committed = True
