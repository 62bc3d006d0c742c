"""The data side of a load session, written once for every SQL warehouse.

A batch's staged ``out_*`` relations live in the processing engine. Loading them is
the same work on every SQL warehouse:

1. dimensions: the batch's dates, branches and products are merged by one engine at
   a time, then its customers, each in a short transaction of its own (a dimension row
   whose batch then fails is harmless: a product nobody bought from yet);
2. the batch, in one transaction: the rows of versions replaced or processed again
   are deleted, the facts, rejects and per-file aggregates appended, the ledger
   updated. Appends never conflict, so engines load their batches at the same time.

A file too large for one batch is loaded in parts (``SqlPartLoad``) on a connection of
its own holding one transaction, and committed once.

A dialect supplies only what differs: how a statement runs (``_execute``, with ``?``
parameters), which connection a batch loads through, how rows cross from the engine
into the warehouse (``_stage`` a relation for a merge, ``_append`` rows to a table),
which errors are the content's doing (``_content_faults``), whether a failed attempt
is retried (``_attempt``), and its customer merge (``MERGE_CUSTOMERS``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from datetime import datetime
from typing import Any

from cafe_etl.engine import Engine
from cafe_etl.rules import FileStatus
from cafe_etl.warehouse.base import FILE_TABLES, FileRecord, PartLoad, cleanup, record_columns, record_values
from cafe_etl.warehouse.ledger_sql import SqlLedger
from cafe_etl.warehouse.schema import split_statements

NO_KEY = 2**63 - 1  # above every key: a customer without a first branch yet takes any

# The relations a dimension merge reads, and the engine query that fills each. Date
# attributes are computed by the engine, so every warehouse gets the same names.
DIMENSION_INPUTS = {
    "merge_date": "SELECT date_key, date, year(date) AS year, quarter(date) AS quarter, month(date) AS month, "
                "monthname(date) AS month_name, week(date) AS week, isodow(date) AS weekday, "
                "dayname(date) AS weekday_name, isodow(date) >= 6 AS is_weekend FROM out_date",
    "merge_branch": "SELECT branch_key, branch_id, name, first_seen FROM out_branch",
    "merge_product": "SELECT product_key, size, name, flavour FROM out_product",
}
CUSTOMER_INPUTS = {"merge_customer": "SELECT customer_key, first_seen, first_branch_key FROM out_customer"}

MERGE_DIMENSIONS = """
INSERT INTO dim_date (date_key, date, year, quarter, month, month_name, week, weekday, weekday_name, is_weekend)
SELECT s.date_key, s.date, s.year, s.quarter, s.month, s.month_name, s.week, s.weekday, s.weekday_name, s.is_weekend
FROM merge_date s WHERE NOT EXISTS (SELECT 1 FROM dim_date d WHERE d.date_key = s.date_key);
INSERT INTO dim_branch (branch_key, branch_id, name, first_seen)
SELECT s.branch_key, s.branch_id, s.name, s.first_seen
FROM merge_branch s WHERE NOT EXISTS (SELECT 1 FROM dim_branch d WHERE d.branch_key = s.branch_key);
UPDATE dim_branch SET name = s.name
FROM merge_branch s
WHERE dim_branch.branch_key = s.branch_key AND dim_branch.name = lower(dim_branch.name) AND s.name <> lower(s.name);
UPDATE dim_branch SET first_seen = s.first_seen
FROM merge_branch s
WHERE dim_branch.branch_key = s.branch_key AND (dim_branch.first_seen IS NULL OR s.first_seen < dim_branch.first_seen);
INSERT INTO dim_product (product_key, size, name, flavour)
SELECT s.product_key, s.size, s.name, s.flavour
FROM merge_product s WHERE NOT EXISTS (SELECT 1 FROM dim_product d WHERE d.product_key = s.product_key)
"""

# Each table a batch appends to: its columns, and the engine relation they come from.
# The rejects take the run's id, written into the query as a number.
_FACTS = {
    "fact_sale": ("file_id, source_row, date_key, time_key, branch_key, payment_key, customer_key, item_count, total",
                  "out_sale"),
    "fact_sale_item": ("file_id, source_row, line_number, product_key, unit_price, date_key, branch_key", "out_item"),
    "etl_reject": ("file_id, source_row, reason_code, detail, row_data, run_id", "out_reject"),
}
_AGGREGATES = {
    "agg_product_day": ("file_id, date_key, branch_key, product_key, quantity, revenue", "out_product_day"),
    "agg_sale_hour": ("file_id, date_key, branch_key, hour, transactions, items, revenue", "out_sale_hour"),
    "agg_customer_day": ("file_id, date_key, branch_key, customers", "out_customer_day"),
}


def _select(columns: str, relation: str, run_id: int) -> str:
    return f"SELECT {columns.replace('run_id', f'CAST({int(run_id)} AS BIGINT) AS run_id')} FROM {relation}"


# A file loaded in parts: its aggregates, from its facts, in the file's transaction.
# Distinct customers are counted a share of the customer keys at a time (the shares
# are disjoint, so their counts add up): the set being counted stays small however
# large the file.
_PART_AGGREGATES = """
INSERT INTO agg_product_day
SELECT file_id, date_key, branch_key, product_key, CAST(count(*) AS INTEGER), sum(unit_price)
FROM fact_sale_item WHERE file_id = ?
GROUP BY file_id, date_key, branch_key, product_key;
INSERT INTO agg_sale_hour
SELECT f.file_id, f.date_key, f.branch_key, t.hour, CAST(count(*) AS INTEGER), CAST(sum(f.item_count) AS INTEGER),
       sum(f.total)
FROM fact_sale f JOIN dim_time t ON t.time_key = f.time_key WHERE f.file_id = ?
GROUP BY f.file_id, f.date_key, f.branch_key, t.hour;
DROP TABLE IF EXISTS part_customer_day;
CREATE TEMP TABLE part_customer_day (date_key INTEGER, branch_key BIGINT, customers BIGINT)
"""
_PART_CUSTOMERS = """
INSERT INTO part_customer_day
SELECT date_key, branch_key, count(DISTINCT customer_key) FROM fact_sale
WHERE file_id = ? AND customer_key IS NOT NULL AND (customer_key % ? + ?) % ? = ?
GROUP BY date_key, branch_key
"""
_PART_CUSTOMER_DAYS = """
INSERT INTO agg_customer_day
SELECT CAST(? AS BIGINT), date_key, branch_key, CAST(sum(customers) AS INTEGER) FROM part_customer_day
GROUP BY date_key, branch_key
"""
CUSTOMERS_PER_SHARE = 2_000_000

# The ledger, in the same transaction as the rows it describes: the versions that new
# ones replace are marked replaced, then each ledger row takes its record. Every field
# of FileRecord but the key and ``replaces`` is a column of etl_file that a load sets.
_NOT_SET = ("file_id", "replaces")
_MARK_REPLACED = f"""
UPDATE etl_file SET status = '{FileStatus.REPLACED}', replaced_by = r.file_id, processed_at = ?
FROM load_record r
WHERE etl_file.file_id = r.replaces AND r.status = '{FileStatus.LOADED}'
"""
_WRITE_RECORDS = f"""
UPDATE etl_file SET {", ".join(f"{name} = r.{name}" for name, _ in record_columns() if name not in _NOT_SET)},
       run_id = ?, processed_at = ?
FROM load_record r
WHERE etl_file.file_id = r.file_id
"""
_STAGE_RECORDS = "CREATE TEMP TABLE load_record AS SELECT " + ", ".join(
    f"unnest(CAST(? AS {kind}[])) AS {name}" for name, kind in record_columns())

Connection = Any  # a dialect's connection


class SqlLoadSession(SqlLedger):
    """A load session of a SQL warehouse: the ledger (``SqlLedger``) and the loads."""

    # The dialect's customer merge: ``merge_customer`` into ``dim_customer``, the earliest
    # first sighting winning (ties: the lowest first branch key).
    MERGE_CUSTOMERS: str
    # Whether customers are merged by one engine at a time (no index keeps their keys unique).
    CUSTOMERS_IN_TURN: bool = True
    # Run inside a dimension merge's transaction, before it: keeps out other processes' mergers.
    LOCK_DIMENSIONS: str | None = None

    def __init__(self, con: Connection) -> None:
        self.con = con  # the control connection: the ledger and runs
        self.folder = tempfile.mkdtemp(prefix="cafe-etl-")  # 0700: rows crossing over, private to this user
        self._merging = threading.Lock()

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # The dialect ---------------------------------------------------------------

    @abstractmethod
    def _execute(self, con: Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement with ``?`` parameters on ``con``; its rows, if any."""

    @abstractmethod
    def _connection(self, engine: Engine) -> Connection:
        """The connection that ``engine``'s batches load through."""

    @abstractmethod
    def _part_connection(self) -> AbstractContextManager[Connection]:
        """A connection of its own, for a file loaded in parts."""

    @abstractmethod
    def _stage(self, engine: Engine, con: Connection, name: str, select: str) -> None:
        """Make the rows of the engine query ``select`` readable on ``con`` as ``name``,
        for the transaction under way."""

    @abstractmethod
    def _append(self, engine: Engine, con: Connection, table: str, columns: str, select: str) -> None:
        """Add the rows of the engine query ``select`` to ``table`` (``columns``) through ``con``."""

    @abstractmethod
    def _content_faults(self) -> AbstractContextManager[None]:
        """Errors while a batch is loaded, in the pipeline's terms: running out of memory
        as it is, a value the warehouse refuses as ``ContentFault`` (the pipeline narrows
        it down to a file), anything else as ``WarehouseError``."""

    def _attempt(self, engine: Engine, work: Callable[[Connection], None]) -> None:
        """Run one transaction's ``work`` on ``engine``'s connection (a dialect may retry it)."""
        work(self._connection(engine))

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._execute(self.con, sql, params)

    # Loads ---------------------------------------------------------------------

    def load(self, engine: Engine, records: Sequence[FileRecord], run_id: int) -> None:
        with self._content_faults():
            self._merge_dimensions(engine)
            self._attempt(engine, lambda con: self._load_batch(engine, con, records, run_id))

    def _load_batch(self, engine: Engine, con: Connection, records: Sequence[FileRecord], run_id: int) -> None:
        with self._transaction(con):
            self._delete_rows_of(con, cleanup(records))
            for table, (columns, relation) in (_FACTS | _AGGREGATES).items():
                self._append(engine, con, table, columns, _select(columns, relation, run_id))
            # The ledger last: its row locks are held for the shortest time.
            self._write_ledger(con, records, run_id)

    def _merge_dimensions(self, engine: Engine) -> None:
        lock = [self.LOCK_DIMENSIONS] if self.LOCK_DIMENSIONS else []
        with self._merging:
            self._attempt(engine, lambda con: self._merge(engine, con, DIMENSION_INPUTS, lock, MERGE_DIMENSIONS))
        with self._merging if self.CUSTOMERS_IN_TURN else nullcontext():
            self._attempt(engine, lambda con: self._merge(engine, con, CUSTOMER_INPUTS, [], self.MERGE_CUSTOMERS))

    def _merge(self, engine: Engine, con: Connection, inputs: dict[str, str], first: list[str], script: str) -> None:
        with self._transaction(con):
            for name, select in inputs.items():
                self._stage(engine, con, name, select)
            for statement in [*first, *split_statements(script)]:
                self._execute(con, statement)

    @contextmanager
    def load_parts(self, engine: Engine, file_id: int, run_id: int, clear_first: bool) -> Iterator[PartLoad]:
        with self._part_connection() as con:
            parts = SqlPartLoad(self, con, file_id, run_id)
            try:
                with self._content_faults():
                    self._execute(con, "BEGIN")
                    if clear_first:
                        self._delete_rows_of(con, [file_id])
                yield parts
            finally:
                if not parts.committed:
                    self._rollback(con)

    # Shared steps --------------------------------------------------------------

    @contextmanager
    def _transaction(self, con: Connection) -> Iterator[None]:
        self._execute(con, "BEGIN")
        try:
            yield
            self._execute(con, "COMMIT")
        except BaseException:
            self._rollback(con)
            raise

    def _rollback(self, con: Connection) -> None:
        """Roll back what can be; a failed COMMIT (a full disk, a lost connection) has
        already ended the transaction, and its error, not the rollback's, is the one to report."""
        with suppress(Exception):
            self._execute(con, "ROLLBACK")

    def _delete_rows_of(self, con: Connection, file_ids: Sequence[int]) -> None:
        if file_ids:
            for table in FILE_TABLES:
                self._execute(con, f"DELETE FROM {table} WHERE file_id = ANY(CAST(? AS BIGINT[]))", [list(file_ids)])

    def _write_ledger(self, con: Connection, records: Sequence[FileRecord], run_id: int) -> None:
        rows = [record_values(r) for r in records]
        self._execute(con, "DROP TABLE IF EXISTS load_record")
        self._execute(con, _STAGE_RECORDS, [list(column) for column in zip(*rows, strict=True)])
        now = datetime.now()
        self._execute(con, _MARK_REPLACED, [now])
        self._execute(con, _WRITE_RECORDS, [run_id, now])


class SqlPartLoad(PartLoad):
    def __init__(self, session: SqlLoadSession, con: Connection, file_id: int, run_id: int) -> None:
        self.session = session
        self.con = con  # holds the file's transaction
        self.file_id = file_id
        self.run_id = run_id
        self.committed = False

    def add(self, engine: Engine) -> None:
        session = self.session
        with session._content_faults():
            session._merge_dimensions(engine)
            for table, (columns, relation) in _FACTS.items():
                session._append(engine, self.con, table, columns, _select(columns, relation, self.run_id))

    def finish(self, record: FileRecord) -> None:
        session, con, file_id = self.session, self.con, self.file_id
        with session._content_faults():
            if record.status == FileStatus.LOADED and record.replaces is not None:
                session._delete_rows_of(con, [record.replaces])
            for statement in split_statements(_PART_AGGREGATES):
                session._execute(con, statement, [file_id] * statement.count("?"))
            shares = record.rows_loaded // CUSTOMERS_PER_SHARE + 1
            for share in range(shares):
                session._execute(con, _PART_CUSTOMERS, [file_id, shares, shares, shares, share])
            session._execute(con, _PART_CUSTOMER_DAYS, [file_id])
            session._write_ledger(con, [record], self.run_id)
            session._execute(con, "COMMIT")
            self.committed = True


def export_path(folder: str, name: str, engine: Engine, suffix: str) -> str:
    """A file for rows crossing from ``engine`` into the warehouse, unique to the engine."""
    return os.path.join(folder, f"{name}-{id(engine)}.{suffix}")
