"""The PostgreSQL warehouse: a server that many loaders write to and many readers read.

Its dialect of the shared SQL load session (``load_sql``). DuckDB stays the processing
engine; a staged batch leaves it as CSV and enters PostgreSQL with ``COPY``. Loaders
in many processes merge dimensions under table locks, customers under the primary
key, and append facts at the same time.

Claims are made under a lock on ``etl_file`` (DESIGN §4: one loader per file).
Deadlocks, serialisation failures and dropped connections are retried with backoff.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from cafe_etl.engine import Engine, EnginePool
from cafe_etl.errors import ContentFault, QueryTimeout, WarehouseError, WarehouseMissing
from cafe_etl.rules import FileStatus
from cafe_etl.warehouse import schema
from cafe_etl.warehouse.base import LedgerEntry, NewFile, Reader, Warehouse, fetch_limited
from cafe_etl.warehouse.customer_sql import NO_KEY
from cafe_etl.warehouse.load_sql import PAIR_CHANGES, SqlLoadSession, export_path
from cafe_etl.warehouse.schema import Hooks

# Each run holds the advisory lock (_RUN_LOCK_CLASS, run_id) while it lives; a claim
# whose run holds no such lock belongs to a loader that died, and is taken over.
_RUN_LOCK_CLASS = 7163
RETRIES = 6
_SCHEMA_LOCK = 7_163_320_001  # pg_advisory_lock key: one process creates or upgrades the schema
_TRANSIENT = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.LockNotAvailable,
              psycopg.OperationalError)

T = TypeVar("T")

# Customers are many (a month of a large chain: a million): merged without a lock,
# each key settled by the primary key itself, in key order so that two loaders never
# wait on each other crosswise. The earliest first sale wins (every SET reads the row
# as it was); the batch's sales are added to the customer's to date.
_EARLIER = f"""(excluded.first_seen < dim_customer.first_seen
   OR (excluded.first_seen = dim_customer.first_seen
       AND excluded.first_branch_key < coalesce(dim_customer.first_branch_key, {NO_KEY})))"""
_MERGE_CUSTOMERS = f"""
INSERT INTO dim_customer (customer_key, first_seen, first_branch_key, last_seen, sales, revenue)
SELECT customer_key, first_seen, first_branch_key, last_seen, sales, revenue FROM merge_customer ORDER BY customer_key
ON CONFLICT (customer_key) DO UPDATE SET
    first_seen = CASE WHEN {_EARLIER} THEN excluded.first_seen ELSE dim_customer.first_seen END,
    first_branch_key = CASE WHEN {_EARLIER} THEN excluded.first_branch_key ELSE dim_customer.first_branch_key END,
    last_seen = greatest(dim_customer.last_seen, excluded.last_seen),
    sales = dim_customer.sales + excluded.sales,
    revenue = dim_customer.revenue + excluded.revenue
"""

# A load's customer weeks and branches, merged like the customers (each customer's rows
# are written only by the loader holding its dim_customer row, so the cohort it reads
# there is final).
_MERGE_CUSTOMER_ROLLUPS = """
INSERT INTO agg_customer_week (customer_key, monday, cohort, sales)
SELECT customer_key, monday, cohort, sales FROM load_customer_week ORDER BY customer_key, monday
ON CONFLICT (customer_key, monday) DO UPDATE SET sales = agg_customer_week.sales + excluded.sales;
INSERT INTO agg_customer_branch (customer_key, branch_key, first_key, last_key)
SELECT customer_key, branch_key, first_key, last_key FROM load_customer_branch ORDER BY customer_key, branch_key
ON CONFLICT (customer_key, branch_key) DO UPDATE SET
    first_key = least(agg_customer_branch.first_key, excluded.first_key),
    last_key = greatest(agg_customer_branch.last_key, excluded.last_key)
"""

# The chain's pairs per day, changed by loaders in many processes at once: each change
# settled by the unique index, in key order so that two loaders never wait on each
# other crosswise. The pairs a change left at zero sales are returned, to leave the day.
_MERGE_PAIRS = f"""
WITH merged AS (
    INSERT INTO agg_pair_date (date_key, a_key, b_key, sales)
    {PAIR_CHANGES} ORDER BY date_key, a_key, b_key
    ON CONFLICT (date_key, a_key, b_key) DO UPDATE SET sales = agg_pair_date.sales + excluded.sales
    RETURNING date_key, a_key, b_key, sales
)
SELECT date_key, a_key, b_key FROM merged WHERE sales = 0
"""
# A version's pairs deleted and noted as taken away in one statement: only the rows this
# delete removed (another loader may have deleted the same version first, and a note
# taken before the delete would count them again).
_TAKE_PAIRS = """
WITH gone AS (DELETE FROM agg_pair_day WHERE file_id = ANY(CAST(? AS BIGINT[]))
              RETURNING date_key, a_key, b_key, sales)
INSERT INTO load_pair_change
SELECT date_key, a_key, b_key, -sum(sales) FROM gone GROUP BY date_key, a_key, b_key
"""
_DROP_EMPTY_PAIRS = """
DELETE FROM agg_pair_date
WHERE (date_key, a_key, b_key) IN (SELECT * FROM unnest(CAST(? AS INTEGER[]), CAST(? AS BIGINT[]), CAST(? AS BIGINT[])))
  AND sales = 0
"""

HOOKS = Hooks(compression=lambda _: "", unique_key="PRIMARY KEY",
              index=lambda what: f"CREATE INDEX IF NOT EXISTS {what}",
              unique_index=lambda what: f"CREATE UNIQUE INDEX IF NOT EXISTS {what}")

# DuckDB's names of the types staged rows have, where PostgreSQL's differ.
_PG_TYPES = {"DOUBLE": "DOUBLE PRECISION", "FLOAT": "REAL", "HUGEINT": "NUMERIC", "TINYINT": "SMALLINT"}


def to_pyformat(sql: str) -> str:
    """Shared SQL uses ``?`` placeholders; psycopg wants ``%s`` (and a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _bound(sql: str, params) -> tuple[str, list | None]:
    """A statement and its parameters as psycopg takes them. Without parameters psycopg
    reads the text as it is, so it is left as it is (a % stays single)."""
    params = list(params)
    return (to_pyformat(sql), params) if params else (sql, None)


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

    def ensure_schema(self, con: psycopg.Connection) -> None:
        # Concurrent "CREATE … IF NOT EXISTS" can still collide in the catalog: one at a time.
        schema.ensure(lambda sql, params: _rows(con.execute(*_bound(sql, params))), HOOKS,
                      lock=f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")

    @contextmanager
    def load_session(self, pool: EnginePool) -> Iterator[PostgresLoadSession]:
        control = self.connect()
        session = PostgresLoadSession(self, control)
        try:
            self.ensure_schema(control)
            yield session
        except psycopg.Error as exc:
            raise _translate(exc, self) from None
        finally:
            session.close()

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
            schema.check_readable(con.execute("SELECT max(version) FROM etl_schema").fetchone()[0], self.describe())
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
                cursor.execute(*_bound(sql, params))
                return fetch_limited(cursor, max_rows)
        except pg_errors.QueryCanceled as exc:
            if self.time_limit:
                raise QueryTimeout(f"a query ran past its {self.time_limit:g} s limit and was cancelled") from None
            raise _translate(exc, self.warehouse) from None
        except psycopg.Error as exc:
            raise _translate(exc, self.warehouse) from None


def _rows(cursor: psycopg.Cursor) -> list[tuple]:
    return cursor.fetchall() if cursor.description else []


class PostgresLoadSession(SqlLoadSession):
    """The PostgreSQL dialect of a load session. The control connection keeps the
    ledger; each engine loads through a connection of its own. Staged rows leave the
    engine as CSV, written by DuckDB itself into the session's private folder (they
    hold no personal data), and enter PostgreSQL with ``COPY``, never row by row."""

    MERGE_CUSTOMERS = _MERGE_CUSTOMERS
    MERGE_CUSTOMER_ROLLUPS = _MERGE_CUSTOMER_ROLLUPS
    CUSTOMERS_IN_TURN = False  # the primary key settles concurrent mergers
    LOCK_CUSTOMERS = "LOCK TABLE dim_customer IN SHARE ROW EXCLUSIVE MODE"
    # One merger at a time, tables always in the same order: no duplicate key, no deadlock.
    LOCK_DIMENSIONS = "LOCK TABLE dim_date, dim_branch, dim_product IN SHARE ROW EXCLUSIVE MODE"

    def __init__(self, warehouse: PostgresWarehouse, control: psycopg.Connection) -> None:
        super().__init__(control)
        self.warehouse = warehouse
        self._loaders: dict[int, psycopg.Connection] = {}
        self._guard = threading.Lock()

    def close(self) -> None:
        for con in [*self._loaders.values(), self.con]:
            con.close()
        super().close()

    def _execute(self, con: psycopg.Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return _rows(con.execute(*_bound(sql, params)))

    def _connection(self, engine: Engine, fresh: bool = False) -> psycopg.Connection:
        with self._guard:
            con = self._loaders.get(id(engine))
            if con is None or fresh or con.closed:
                if con is not None:
                    con.close()
                con = self._loaders[id(engine)] = self.warehouse.connect()
            return con

    @contextmanager
    def _part_connection(self) -> Iterator[psycopg.Connection]:
        con = self.warehouse.connect()
        try:
            yield con
        finally:
            con.close()

    def _attempt(self, engine: Engine, work: Callable[[psycopg.Connection], None]) -> None:
        _retrying(lambda: work(self._connection(engine)), on_retry=lambda: self._connection(engine, fresh=True))

    def _stage(self, engine: Engine, con: psycopg.Connection, name: str, select: str) -> None:
        columns = ", ".join(f"{column} {_PG_TYPES.get(kind, kind)}"
                            for column, kind, *_ in engine.rows(f"DESCRIBE {select}"))
        con.execute(f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP")
        self._copy(engine, con, name, None, select)

    def _append(self, engine: Engine, con: psycopg.Connection, table: str, columns: str, select: str) -> None:
        self._copy(engine, con, table, columns, select)

    def _copy(self, engine: Engine, con: psycopg.Connection, table: str, columns: str | None, select: str) -> None:
        path = export_path(self.folder, table, engine, "csv")
        engine.run(f"COPY ({select}) TO '{path}' (FORMAT csv, HEADER false)")
        try:
            if os.path.getsize(path) == 0:
                return
            into = f"{table} ({columns})" if columns else table
            with con.cursor().copy(f"COPY {into} FROM STDIN (FORMAT csv)") as copy, open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    copy.write(chunk)
        finally:
            os.unlink(path)

    def _delete_pairs_of(self, con: psycopg.Connection, file_ids: Sequence[int]) -> None:
        self._execute(con, _TAKE_PAIRS, [list(file_ids)])

    def _merge_pair_changes(self, con: psycopg.Connection) -> None:
        emptied = self._execute(con, _MERGE_PAIRS)
        if emptied:
            self._execute(con, _DROP_EMPTY_PAIRS, [list(column) for column in zip(*emptied, strict=True)])

    def _content_faults(self) -> AbstractContextManager[None]:
        return _refusals(self.warehouse)

    # The ledger's locking --------------------------------------------------------

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
            f"""SELECT file_id, location, content_sha256, status, run_id,
                      status = '{FileStatus.LOADING}' AND EXISTS (
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
