"""The data side of a load session, written once for every SQL warehouse.

A batch's staged ``out_*`` relations live in the processing engine. Loading them is
the same work on every SQL warehouse:

1. dimensions: the batch's dates, branches and products are merged by one engine at
   a time, in a short transaction of their own (a dimension row whose batch then
   fails is harmless: a product nobody bought from yet);
2. the batch, in one transaction: the rows of versions replaced or processed again
   are deleted, the batch's customers merged, the facts, rejects and per-file
   aggregates appended, the chain's pairs per day changed by the pairs that left and
   came, the ledger updated. Appends never conflict, so engines load their batches at
   the same time.

A customer's first sale (``dim_customer.first_seen`` and ``first_branch_key``) and
sales to date (``last_seen``, ``sales``, ``revenue``) are kept exact: they change only
in the transaction that loads the facts behind them, the earliest sale winning and
the batch's sales added, and when rows leave with a replaced version, the customers
they held are settled again from the facts that remain (those left with no sale at
all leave the dimension). Analytics read a customer's first sale from there, and a
question about the whole history its sales to date.

A file too large for one batch is loaded in parts (``SqlPartLoad``) on a connection of
its own holding one transaction, and committed once.

A dialect supplies only what differs: how a statement runs (``_execute``, with ``?``
parameters), which connection a batch loads through, how rows cross from the engine
into the warehouse (``_stage`` a relation for a merge, ``_append`` rows to a table),
which errors are the content's doing (``_content_faults``), whether a failed attempt
is retried (``_attempt``), its customer merge (``MERGE_CUSTOMERS``) and how pair
changes join the chain's days (``_merge_pair_changes``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import Any

from cafe_etl import categories
from cafe_etl.engine import Engine
from cafe_etl.rules import FileStatus
from cafe_etl.warehouse.base import FILE_TABLES, FileRecord, PartLoad, cleanup
from cafe_etl.warehouse.customer_sql import (
    CUSTOMER_INPUT,
    CUSTOMER_ROLLUP_INPUTS,
    LOAD_CUSTOMER_ROLLUPS,
    MOVE_COHORTS,
    NOTE_LOST_CUSTOMERS,
    PART_CUSTOMERS_TO_MERGE,
    PART_ROLLUPS_TO_MERGE,
    SETTLE_LOST_CUSTOMERS,
    SETTLE_LOST_ROLLUPS,
)
from cafe_etl.warehouse.ledger_sql import SqlLedger, record_statements
from cafe_etl.warehouse.schema import split_statements

# The relations a dimension merge reads, and the engine query that fills each. Date
# attributes are computed by the engine, so every warehouse gets the same names.
DIMENSION_INPUTS = {
    "merge_date": "SELECT date_key, date, year(date) AS year, quarter(date) AS quarter, month(date) AS month, "
                "monthname(date) AS month_name, week(date) AS week, isodow(date) AS weekday, "
                "dayname(date) AS weekday_name, isodow(date) >= 6 AS is_weekend FROM out_date",
    "merge_branch": "SELECT branch_key, branch_id, name, first_seen FROM out_branch",
    "merge_product": "SELECT product_key, size, name, flavour FROM out_product",
}

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
    "agg_product_day": ("file_id, date_key, branch_key, product_key, quantity, revenue, sales", "out_product_day"),
    "agg_pair_day": ("file_id, date_key, branch_key, a_key, b_key, sales", "out_pair_day"),
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
INSERT INTO agg_product_day (file_id, date_key, branch_key, product_key, quantity, revenue, sales)
SELECT file_id, date_key, branch_key, product_key, CAST(count(*) AS INTEGER), sum(unit_price),
       CAST(count(DISTINCT source_row) AS INTEGER)
FROM fact_sale_item WHERE file_id = ?
GROUP BY file_id, date_key, branch_key, product_key;
INSERT INTO agg_pair_day (file_id, date_key, branch_key, a_key, b_key, sales)
SELECT a.file_id, a.date_key, a.branch_key, a.product_key, b.product_key, CAST(count(*) AS INTEGER)
FROM (SELECT DISTINCT file_id, source_row, date_key, branch_key, product_key FROM fact_sale_item WHERE file_id = ?) a
JOIN (SELECT DISTINCT file_id, source_row, product_key FROM fact_sale_item WHERE file_id = ?) b
  ON b.file_id = a.file_id AND b.source_row = a.source_row AND b.product_key > a.product_key
GROUP BY a.file_id, a.date_key, a.branch_key, a.product_key, b.product_key;
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



# The chain's pairs per day (agg_pair_date) follow agg_pair_day within each load's
# transaction: the pairs of the rows deleted are noted as taken away (``_delete_pairs_of``),
# those of the files just loaded as added (a batch's summed up by the engine, as
# staged; a file loaded in parts', from its aggregates), and the net change per day
# and pair is merged in by the dialect (``_merge_pair_changes``).
_DELETE_ROWS = "DELETE FROM {table} WHERE file_id = ANY(CAST(? AS BIGINT[]))"  # a version's rows in a table
_NOTE_PAIRS_LEAVING = """INSERT INTO load_pair_change SELECT date_key, a_key, b_key, -sum(sales) FROM agg_pair_day
WHERE file_id = ANY(CAST(? AS BIGINT[])) GROUP BY date_key, a_key, b_key"""
_PAIR_CHANGE_COLUMNS = "date_key, a_key, b_key, sales"
# A batch's pairs (the engine's self-join of its items) kept once, as they are read twice.
_KEEP_STAGED_PAIRS = "CREATE OR REPLACE TEMP TABLE load_pair_day AS SELECT * FROM out_pair_day"
_STAGED_PAIRS = "SELECT date_key, a_key, b_key, sum(sales) FROM load_pair_day GROUP BY date_key, a_key, b_key"
_BATCH_APPENDS = _FACTS | _AGGREGATES | {"agg_pair_day": (_AGGREGATES["agg_pair_day"][0], "load_pair_day")}
_NOTE_PART_PAIRS = f"INSERT INTO load_pair_change SELECT {_PAIR_CHANGE_COLUMNS} FROM agg_pair_day WHERE file_id = ?"
# The net change of each day and pair, for those that changed at all.
PAIR_CHANGES = """SELECT date_key, a_key, b_key, sum(sales) AS sales FROM load_pair_change
GROUP BY date_key, a_key, b_key HAVING sum(sales) <> 0"""

Connection = Any  # a dialect's connection


class SqlLoadSession(SqlLedger):
    """A load session of a SQL warehouse: the ledger (``SqlLedger``) and the loads."""

    # The dialect's customer merge: ``merge_customer`` into ``dim_customer``, the earliest
    # first sighting winning (ties: the lowest first branch key).
    MERGE_CUSTOMERS: str
    # The dialect's merge of a load's customer weeks and branches (``load_customer_week``,
    # ``load_customer_branch``): sales added, first and last days widened (a known week's
    # cohort moves in MOVE_COHORTS).
    MERGE_CUSTOMER_ROLLUPS: str
    # Whether batches that merge customers load one at a time in this process (no index
    # keeps their keys unique, and two engines must not add the same customer).
    CUSTOMERS_IN_TURN: bool = True
    # Run inside a dimension merge's transaction, before it: keeps out other processes' mergers.
    LOCK_DIMENSIONS: str | None = None
    # Run first in a transaction that settles customers again: waits for, then keeps out,
    # other processes' loads that merge customers, so the facts it reads are final.
    LOCK_CUSTOMERS: str | None = None

    def __init__(self, con: Connection) -> None:
        self.con = con  # the control connection: the ledger and runs
        self.folder = tempfile.mkdtemp(prefix="cafe-etl-")  # 0700: rows crossing over, private to this user
        self._merging = threading.Lock()  # dimension merges, one engine at a time
        # Loads that merge customers, one at a time where CUSTOMERS_IN_TURN. Reentrant: a
        # file loaded in parts holds it from its first part to its commit (a transaction
        # sees the snapshot it began with, so no other merge may commit meanwhile).
        self._customers = threading.RLock()
        self.categories = categories.load()  # a bad categories file stops the run before it loads anything

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
    def _merge_pair_changes(self, con: Connection) -> None:
        """Add the net changes of ``load_pair_change`` (``PAIR_CHANGES``) to ``agg_pair_date``;
        a day's pair that no sale holds any longer leaves it."""

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
            with self._customers_turn():
                self._attempt(engine, lambda con: self._load_batch(engine, con, records, run_id))

    def _load_batch(self, engine: Engine, con: Connection, records: Sequence[FileRecord], run_id: int) -> None:
        clear = cleanup(records)
        with self._transaction(con):
            if clear and self.LOCK_CUSTOMERS:
                self._execute(con, self.LOCK_CUSTOMERS)
            self._note_leaving(con, clear)
            self._delete_rows_of(con, clear)
            engine.run(_KEEP_STAGED_PAIRS)
            for table, (columns, relation) in _BATCH_APPENDS.items():
                self._append(engine, con, table, columns, _select(columns, relation, run_id))
            # Then what other loaders change too, from here to the commit: a loader waits
            # for another's commit on each customer they share (their rows change with
            # every sale), so appends come first and run at the same time.
            for name, select in {"merge_customer": CUSTOMER_INPUT, **CUSTOMER_ROLLUP_INPUTS}.items():
                self._stage(engine, con, name, select)
            self._merge_customers(con)
            self._merge_customer_rollups(con)
            if clear:
                self._settle_lost_customers(con)
            # After the customers: every loader takes its row locks in one order.
            self._append(engine, con, "load_pair_change", _PAIR_CHANGE_COLUMNS, _STAGED_PAIRS)
            self._merge_pair_changes(con)
            # The ledger last: its row locks are held for the shortest time.
            self._write_ledger(con, records, run_id)

    def _customers_turn(self) -> AbstractContextManager:
        return self._customers if self.CUSTOMERS_IN_TURN else nullcontext()

    def _merge_dimensions(self, engine: Engine) -> None:
        lock = [self.LOCK_DIMENSIONS] if self.LOCK_DIMENSIONS else []
        with self._merging:
            self._attempt(engine, lambda con: self._merge(engine, con, lock))

    def _merge(self, engine: Engine, con: Connection, first: list[str]) -> None:
        with self._transaction(con):
            for name, select in DIMENSION_INPUTS.items():
                self._stage(engine, con, name, select)
            for statement in [*first, *split_statements(MERGE_DIMENSIONS)]:
                self._execute(con, statement)
            categories.sync(lambda sql, params: self._execute(con, sql, params), self.categories, new_only=True)

    def recategorise(self) -> int:
        """Every product into its category by the mapping in use, now; how many moved."""
        lock = [self.LOCK_DIMENSIONS] if self.LOCK_DIMENSIONS else []
        with self._merging, self._transaction(self.con):
            for statement in lock:
                self._run(statement)
            return categories.sync(lambda sql, params: self._run(sql, params), self.categories)

    def _merge_customers(self, con: Connection) -> None:
        for statement in split_statements(self.MERGE_CUSTOMERS):
            self._execute(con, statement)

    @contextmanager
    def load_parts(self, engine: Engine, file_id: int, run_id: int, clear_first: bool) -> Iterator[PartLoad]:
        with self._customers_turn(), self._part_connection() as con:
            parts = SqlPartLoad(self, con, file_id, run_id)
            try:
                with self._content_faults():
                    self._execute(con, "BEGIN")
                    self._note_leaving(con, [file_id] if clear_first else [])
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

    def _note_leaving(self, con: Connection, file_ids: Sequence[int], *, adding: bool = False) -> None:
        """Note the customers of the versions whose rows are about to be deleted, for
        ``_settle_lost_customers`` (and start the pair changes that ``_delete_rows_of``
        and the loads note, for ``_merge_pair_changes``); ``adding``: to what was noted
        earlier in the transaction."""
        if not adding:
            self._execute(con, "DROP TABLE IF EXISTS load_lost_customer")
            self._execute(con, "DROP TABLE IF EXISTS load_pair_change")
        self._execute(con, "CREATE TEMP TABLE IF NOT EXISTS load_lost_customer (customer_key BIGINT)")
        self._execute(con, "CREATE TEMP TABLE IF NOT EXISTS load_pair_change "
                           "(date_key INTEGER, a_key BIGINT, b_key BIGINT, sales BIGINT)")
        if file_ids:
            self._execute(con, NOTE_LOST_CUSTOMERS, [list(file_ids)])

    def _delete_rows_of(self, con: Connection, file_ids: Sequence[int]) -> None:
        if file_ids:
            for table in FILE_TABLES:
                if table == "agg_pair_day":
                    self._delete_pairs_of(con, file_ids)
                else:
                    self._execute(con, _DELETE_ROWS.format(table=table), [list(file_ids)])

    def _delete_pairs_of(self, con: Connection, file_ids: Sequence[int]) -> None:
        """Delete the versions' pairs, noting them in ``load_pair_change`` as taken away.
        Here noted first, then deleted: right where one load at a time writes (a dialect
        whose loaders delete at once notes the rows its delete removed)."""
        self._execute(con, _NOTE_PAIRS_LEAVING, [list(file_ids)])
        self._execute(con, _DELETE_ROWS.format(table="agg_pair_day"), [list(file_ids)])

    def _merge_customer_rollups(self, con: Connection) -> None:
        """The load's customers' weeks and branches (``merge_customer_week``,
        ``merge_customer_branch``) into the warehouse's, after the customers' merge,
        which gives their cohorts."""
        for statement in [*split_statements(LOAD_CUSTOMER_ROLLUPS), *split_statements(self.MERGE_CUSTOMER_ROLLUPS),
                          MOVE_COHORTS]:
            self._execute(con, statement)

    def _settle_lost_customers(self, con: Connection) -> None:
        """Every customer noted by ``_delete_rows_of``, from the facts now in place: first
        sale, sales to date, weeks and branches; one left with no sale leaves the dimension."""
        for statement in [*split_statements(SETTLE_LOST_CUSTOMERS), *split_statements(SETTLE_LOST_ROLLUPS)]:
            self._execute(con, statement)

    def _write_ledger(self, con: Connection, records: Sequence[FileRecord], run_id: int) -> None:
        for sql, params in record_statements(records, run_id):
            self._execute(con, sql, params)


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
        replaced = [record.replaces] if record.status == FileStatus.LOADED and record.replaces is not None else []
        with session._content_faults(), session._customers_turn():
            if (replaced or record.clear_previous) and session.LOCK_CUSTOMERS:
                session._execute(con, session.LOCK_CUSTOMERS)
            session._note_leaving(con, replaced, adding=True)
            session._delete_rows_of(con, replaced)
            for statement in split_statements(_PART_AGGREGATES):
                session._execute(con, statement, [file_id] * statement.count("?"))
            shares = record.rows_loaded // CUSTOMERS_PER_SHARE + 1
            for share in range(shares):
                session._execute(con, _PART_CUSTOMERS, [file_id, shares, shares, shares, share])
            session._execute(con, _PART_CUSTOMER_DAYS, [file_id])
            session._execute(con, "DROP TABLE IF EXISTS merge_customer")
            session._execute(con, PART_CUSTOMERS_TO_MERGE, [file_id, file_id])
            session._merge_customers(con)
            for statement in split_statements(PART_ROLLUPS_TO_MERGE):
                session._execute(con, statement, [file_id] * statement.count("?"))
            session._merge_customer_rollups(con)
            if replaced or record.clear_previous:
                session._settle_lost_customers(con)
            session._execute(con, _NOTE_PART_PAIRS, [file_id])
            session._merge_pair_changes(con)
            session._write_ledger(con, [record], self.run_id)
            session._execute(con, "COMMIT")
            self.committed = True


def export_path(folder: str, name: str, engine: Engine, suffix: str) -> str:
    """A file for rows crossing from ``engine`` into the warehouse, unique to the engine."""
    return os.path.join(folder, f"{name}-{id(engine)}.{suffix}")
