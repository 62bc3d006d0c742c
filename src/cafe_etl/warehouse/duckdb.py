"""The embedded DuckDB warehouse: one file, written by one process at a time.

Its dialect of the shared SQL load session (``load_sql``): loading attaches the
warehouse file to the processing engine, so a staged batch moves into the star schema
with plain ``INSERT … SELECT`` inside one transaction: no rows cross into Python.
Reads use short-lived read-only connections. Who may open the file, and when, is
``duckdb_access``'s business.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

import duckdb

from cafe_etl.engine import Engine, EnginePool, temp_table
from cafe_etl.errors import ContentFault, QueryTimeout, WarehouseError, WarehouseMissing, WarehouseOutdated
from cafe_etl.warehouse import schema
from cafe_etl.warehouse.base import LedgerEntry, NewFile, Reader, Warehouse, fetch_limited
from cafe_etl.warehouse.customer_sql import NO_KEY
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
from cafe_etl.warehouse.load_sql import PAIR_CHANGES, SqlLoadSession, export_path
from cafe_etl.warehouse.schema import Hooks, split_statements

_ALIAS = "wh"
CHECKPOINT_AFTER = "256MB"

# Customers are many (a month of a large chain: a million) and keep no index (see the
# DDL): the batch's customers are looked up in the dimension once, new ones added,
# known ones given the batch's sales (and its first sale, when earlier). One engine at a time.
_MERGE_CUSTOMERS = f"""
CREATE OR REPLACE TEMP TABLE load_customer AS
SELECT o.customer_key, o.first_seen, o.first_branch_key, o.last_seen, o.sales, o.revenue,
       d.customer_key IS NULL AS new,
       CASE WHEN d.customer_key IS NULL THEN false
            WHEN o.first_seen < d.first_seen THEN true
            WHEN o.first_seen = d.first_seen THEN o.first_branch_key < coalesce(d.first_branch_key, {NO_KEY})
            ELSE false END AS earlier
FROM merge_customer o LEFT JOIN dim_customer d USING (customer_key);
UPDATE dim_customer SET first_seen = o.first_seen, first_branch_key = o.first_branch_key
FROM load_customer o
WHERE o.earlier AND dim_customer.customer_key = o.customer_key;
UPDATE dim_customer SET last_seen = greatest(dim_customer.last_seen, o.last_seen),
                        sales = dim_customer.sales + o.sales, revenue = dim_customer.revenue + o.revenue
FROM load_customer o
WHERE NOT o.new AND dim_customer.customer_key = o.customer_key;
INSERT INTO dim_customer (customer_key, first_seen, first_branch_key, last_seen, sales, revenue)
SELECT customer_key, first_seen, first_branch_key, last_seen, sales, revenue FROM load_customer WHERE new
"""

# A load's customer weeks and branches: those known changed, the others added. Each
# UPDATE sets only what changes (a week's cohort moves in MOVE_COHORTS): an update holds
# memory per column and row until the commit, within the engines' shared limit.
_MERGE_CUSTOMER_ROLLUPS = """
UPDATE agg_customer_week SET sales = agg_customer_week.sales + w.sales
FROM load_customer_week w
WHERE agg_customer_week.customer_key = w.customer_key AND agg_customer_week.monday = w.monday;
INSERT INTO agg_customer_week (customer_key, monday, cohort, sales)
SELECT w.customer_key, w.monday, w.cohort, w.sales FROM load_customer_week w
WHERE NOT EXISTS (SELECT 1 FROM agg_customer_week a WHERE a.customer_key = w.customer_key AND a.monday = w.monday);
UPDATE agg_customer_branch SET last_key = b.last_key
FROM load_customer_branch b
WHERE agg_customer_branch.customer_key = b.customer_key AND agg_customer_branch.branch_key = b.branch_key
  AND b.last_key > agg_customer_branch.last_key;
UPDATE agg_customer_branch SET first_key = b.first_key
FROM load_customer_branch b
WHERE agg_customer_branch.customer_key = b.customer_key AND agg_customer_branch.branch_key = b.branch_key
  AND b.first_key < agg_customer_branch.first_key;
INSERT INTO agg_customer_branch (customer_key, branch_key, first_key, last_key)
SELECT b.customer_key, b.branch_key, b.first_key, b.last_key FROM load_customer_branch b
WHERE NOT EXISTS (SELECT 1 FROM agg_customer_branch a
                  WHERE a.customer_key = b.customer_key AND a.branch_key = b.branch_key)
"""

# One loader at a time writes the chain's pairs per day (batches load in turn): the
# changes are added to the pairs a day has, the others added to the day.
_MERGE_PAIRS = f"""
CREATE OR REPLACE TEMP TABLE load_pair_net AS {PAIR_CHANGES};
UPDATE agg_pair_date SET sales = agg_pair_date.sales + c.sales
FROM load_pair_net c
WHERE agg_pair_date.date_key = c.date_key AND agg_pair_date.a_key = c.a_key AND agg_pair_date.b_key = c.b_key;
INSERT INTO agg_pair_date (date_key, a_key, b_key, sales)
SELECT c.date_key, c.a_key, c.b_key, c.sales FROM load_pair_net c
WHERE NOT EXISTS (SELECT 1 FROM agg_pair_date p
                  WHERE p.date_key = c.date_key AND p.a_key = c.a_key AND p.b_key = c.b_key);
DELETE FROM agg_pair_date USING load_pair_net c
WHERE agg_pair_date.sales = 0
  AND agg_pair_date.date_key = c.date_key AND agg_pair_date.a_key = c.a_key AND agg_pair_date.b_key = c.b_key
"""

HOOKS = Hooks(compression=lambda method: f"USING COMPRESSION {method}", unique_key="NOT NULL", index=lambda _: "")

# Errors that a value in the batch can cause: the pipeline narrows them down to a file.
_REFUSED = (duckdb.DataError, duckdb.IntegrityError, duckdb.InvalidInputException)


@contextmanager
def _loading(path: str) -> Iterator[None]:
    try:
        yield
    except duckdb.OutOfMemoryException:
        raise
    except _REFUSED as exc:
        raise ContentFault("loaded") from exc
    except duckdb.Error as exc:
        raise translate(exc, path) from None


class DuckDBLoadSession(SqlLoadSession):
    """The DuckDB dialect of a load session. The warehouse file is attached to every
    engine's connection, so a batch moves into the star schema with plain
    ``INSERT … SELECT`` from the engine's staged relations: no rows cross into Python."""

    MERGE_CUSTOMERS = _MERGE_CUSTOMERS
    MERGE_CUSTOMER_ROLLUPS = _MERGE_CUSTOMER_ROLLUPS

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str) -> None:
        super().__init__(con)
        self.path = path

    def _execute(self, con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return con.execute(sql, list(params) or None).fetchall()

    def _connection(self, engine: Engine) -> duckdb.DuckDBPyConnection:
        return engine.con

    @contextmanager
    def _part_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.con.cursor()
        try:
            con.execute(f"USE {_ALIAS}").fetchall()
            yield con
        finally:
            con.close()

    def _stage(self, engine: Engine, con: duckdb.DuckDBPyConnection, name: str, select: str) -> None:
        # The engine's own connection, which sees its staged relations: a view is enough.
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}").fetchall()

    def _append(self, engine: Engine, con: duckdb.DuckDBPyConnection, table: str, columns: str, select: str) -> None:
        if con is engine.con:
            con.execute(f"INSERT INTO {table} ({columns}) {select}").fetchall()
            return
        # Another connection cannot see the engine's temp tables: the rows travel as
        # Parquet through the session's private folder (they hold no personal data).
        path = export_path(self.folder, table, engine, "parquet")
        engine.run(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
        try:
            con.execute(f"INSERT INTO {table} ({columns}) SELECT * FROM read_parquet(?)", [path]).fetchall()
        finally:
            os.unlink(path)

    def _merge_pair_changes(self, con: duckdb.DuckDBPyConnection) -> None:
        for statement in split_statements(_MERGE_PAIRS):
            self._execute(con, statement)

    def _content_faults(self) -> AbstractContextManager[None]:
        return _loading(self.path)

    @contextmanager
    def ledger_transaction(self) -> Iterator[None]:
        # One process at a time holds a DuckDB file, and its engines share this
        # connection under the caller's lock: a transaction is all it takes.
        with self._transaction(self.con):
            yield

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
            schema.ensure(lambda sql, params: control.execute(sql, list(params) or None).fetchall(), HOOKS)
        except duckdb.Error as exc:
            self._detach(control, pool)
            raise translate(exc, self.path) from None
        except BaseException:
            self._detach(control, pool)
            raise
        session = DuckDBLoadSession(control, self.path)
        try:
            yield session
        except duckdb.Error as exc:
            raise translate(exc, self.path) from None
        finally:
            session.close()
            self._detach(control, pool)

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
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'etl_file'").fetchall()[0][0]
                version = con.execute("SELECT max(version) FROM etl_schema").fetchall()[0][0] if created else None
            except duckdb.Error as exc:
                con.close()
                raise translate(exc, self.path) from None
            if not created:
                con.close()
                raise WarehouseMissing(f"no warehouse in {self.path} yet: run `cafe-etl ingest` first")
            try:
                schema.check_readable(version, self.path)
            except WarehouseOutdated:
                con.close()
                raise
            try:
                yield DuckDBReader(con, self.path, time_limit)
            finally:
                con.close()
