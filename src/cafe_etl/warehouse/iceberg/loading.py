"""Loads into the Iceberg warehouse: a batch's rows committed table by table, the
ledger kept by the SQL ledger session beside the lake (see the package's doc)."""

from __future__ import annotations

import logging
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

import duckdb

from cafe_etl import categories
from cafe_etl.engine import Engine
from cafe_etl.errors import WarehouseError
from cafe_etl.logs import LOGGER_NAME
from cafe_etl.rules import FileStatus, RunStatus
from cafe_etl.warehouse.base import (
    FILE_TABLES,
    FileRecord,
    LedgerEntry,
    LoadSession,
    NewFile,
    PartLoad,
    RunTotals,
    cleanup,
)
from cafe_etl.warehouse.customer_sql import CUSTOMER_INPUT, NO_KEY
from cafe_etl.warehouse.iceberg.tables import (
    CATALOG,
    COMMIT_ATTEMPTS,
    NAMESPACE,
    REWRITE_CUSTOMERS_FROM,
    SNAPSHOT_RETENTION,
    TABLES,
    fit,
    storage_errors,
)
from cafe_etl.warehouse.load_sql import _AGGREGATES, _FACTS, DIMENSION_INPUTS, _select

log = logging.getLogger(LOGGER_NAME)


class IcebergLoadSession(LoadSession):
    """Loads into Iceberg; the ledger is the SQL ledger session's (see the module's doc)."""

    def __init__(self, catalog: Any, ledger: Any) -> None:
        self.catalog = catalog
        self.ledger = ledger
        self._writing = threading.Lock()  # one batch's commits at a time in this process
        # Ledger ids this session claimed new: no row of theirs can be in a table yet. A
        # version claimed earlier (taken over from a loader that died) may have rows that
        # its commit must delete first; so may versions processed again or replaced.
        self._fresh: set[int] = set()
        self._dead: set[int] = set()  # claims of loaders that died, seen by lookup: their rows go
        self._run_id: int | None = None
        self.categories = ledger.categories

    # The ledger -------------------------------------------------------------------

    def start_run(self, command: str) -> int:
        self._run_id = self.ledger.start_run(command)
        return self._run_id

    def finish_run(self, run_id: int, totals: RunTotals, status: Any, error: str | None = None) -> None:
        self.ledger.finish_run(run_id, totals, status, error)
        if status != RunStatus.SUCCEEDED:
            return
        try:
            with self._writing:
                self.expire_snapshots()
        except Exception as exc:  # noqa: BLE001 - upkeep: the run's loads are committed; the next run tries again
            log.warning("old Iceberg snapshots were not expired this time (%s)", type(exc).__name__)

    def expire_snapshots(self, now: float | None = None) -> int:
        """Forget the snapshots of every table older than ``SNAPSHOT_RETENTION`` (the
        current one always stays): a table's metadata, and so the cost of each commit,
        stays bounded, and time travel reaches back that far. How many went."""
        cutoff_ms = int(((now or time.time()) - SNAPSHOT_RETENTION.total_seconds()) * 1000)
        expired = 0
        for name in TABLES:
            table = self.catalog.load_table(f"{NAMESPACE}.{name}")
            current = table.metadata.current_snapshot_id
            old = [s.snapshot_id for s in table.snapshots() if s.timestamp_ms < cutoff_ms and s.snapshot_id != current]
            if old:
                # older_than leaves alone what a branch or tag (another engine's) still needs
                table.maintenance.expire_snapshots().older_than(datetime.fromtimestamp(cutoff_ms / 1000)).commit()
                expired += len(old)
        return expired

    def ledger_transaction(self) -> AbstractContextManager[None]:
        return self.ledger.ledger_transaction()

    def lookup(self, files: Sequence[NewFile]) -> list[LedgerEntry]:
        entries = self.ledger.lookup(files)
        self._dead.update(e.file_id for e in entries
                          if e.status == FileStatus.LOADING and not e.claim_live and e.run_id != self._run_id)
        return entries

    def claim(self, files: Sequence[NewFile], run_id: int) -> list[int]:
        ids = self.ledger.claim(files, run_id)
        self._fresh.update(ids)
        return ids

    def take_over(self, file_ids: Sequence[int], run_id: int) -> None:
        self.ledger.take_over(file_ids, run_id)

    def record_copies(self, copies: Sequence[tuple[NewFile, int]], run_id: int) -> None:
        self.ledger.record_copies(copies, run_id)

    def record_load_seconds(self, seconds: Sequence[tuple[int, float]]) -> None:
        self.ledger.record_load_seconds(seconds)

    # Loads --------------------------------------------------------------------------

    def recategorise(self) -> int:
        with self._writing, storage_errors(self.describe()):
            return self._commit("dim_product", self._recategorise)

    def load(self, engine: Engine, records: Sequence[FileRecord], run_id: int) -> None:
        with storage_errors(self.describe()):
            self._load(engine, records, run_id)

    def describe(self) -> str:
        return f"the Iceberg catalog {CATALOG}"

    def _load(self, engine: Engine, records: Sequence[FileRecord], run_id: int) -> None:
        staged = {name: engine.con.sql(select).to_arrow_table() for name, select in DIMENSION_INPUTS.items()}
        staged["merge_customer"] = engine.con.sql(CUSTOMER_INPUT).to_arrow_table()
        rows = {table: engine.con.sql(_select(columns, relation, run_id)).to_arrow_table()
                for table, (columns, relation) in (_FACTS | _AGGREGATES).items()}
        with self._writing:
            self._merge_dimensions(staged)
            self.commit_files([r.file_id for r in records], cleanup(records),
                              {table: lambda table=table: [rows[table]] for table in FILE_TABLES},
                              staged["merge_customer"])
        # The ledger last, through the engine's connection to its database.
        self.ledger._attempt(engine, lambda con: self._write_ledger(con, records, run_id))

    def commit_files(self, own: Sequence[int], others: Sequence[int], chunks: dict[str, Callable[[], Iterable[Any]]],
                     customers: Any) -> None:
        """A load's per-file tables and customers (held ``_writing``): for each table one
        commit that deletes the rows ``clearing`` names and appends ``chunks[table]()``
        (Arrow tables, made again on every attempt); then the customers, after their
        facts: a crash in between leaves facts whose claim the next run takes over, and
        the customers of a taken-over version are settled."""
        clear = self.clearing(own, others)
        lost = self._customers_of(clear) if clear else None
        for table in FILE_TABLES:
            self._commit(table, lambda _, t, table=table: self._replace_rows(t, clear, chunks[table]()))
        self._customers_step(customers, lost)

    def _customers_step(self, incoming: Any, lost: Any) -> None:
        """The batch's customers merged, and those of deleted rows settled from the facts,
        one loader process at a time: a settling that found no sale of a customer must
        not cross another loader's merge that found the customer known (its facts
        committed first). Where several processes load (a PostgreSQL ledger) the ledger
        database's customer lock serialises them; one DuckDB ledger has one writer."""
        with self._customers_turn():
            self._merge_customers(incoming)
            if lost is not None and lost.num_rows:
                self._settle_customers(lost)

    @contextmanager
    def _customers_turn(self) -> Iterator[None]:
        lock = getattr(self.ledger, "LOCK_CUSTOMERS", None)
        if not lock:
            yield
            return
        with self.ledger._part_connection() as con:
            self.ledger._execute(con, "BEGIN")
            self.ledger._execute(con, lock)  # held until the rollback: nothing is written there
            try:
                yield
            finally:
                self.ledger._rollback(con)

    def clearing(self, own: Sequence[int], others: Sequence[int]) -> list[int]:
        """The file ids whose rows a load's commits delete: ``others`` (versions replaced or
        processed again), the load's ``own`` ids unless freshly claimed by this session,
        and dead claims the ledger showed (a loader that died after its commits but before
        its ledger write: their rows must go, whether or not the version comes back).
        From here on the own ids may have rows: an attempt again must delete them first."""
        clear = set(others) | {file_id for file_id in own if file_id not in self._fresh} | self._dead
        self._fresh.difference_update(own)
        self._dead.clear()
        return sorted(clear)

    def _write_ledger(self, con: Any, records: Sequence[FileRecord], run_id: int) -> None:
        with self.ledger._transaction(con):
            self.ledger._write_ledger(con, records, run_id)

    @contextmanager
    def load_parts(self, engine: Engine, file_id: int, run_id: int, clear_first: bool) -> Iterator[PartLoad]:
        from cafe_etl.warehouse.iceberg.parts import IcebergPartLoad

        parts = IcebergPartLoad(self, file_id, run_id, clear_first)
        try:
            yield parts
        finally:
            parts.close()

    # Steps --------------------------------------------------------------------------

    def _commit(self, name: str, change: Callable[[duckdb.DuckDBPyConnection, Any], Any]) -> Any:
        """Run ``change(work, table)`` on the table's current state, and commit what it did;
        made again on the new state when another loader committed first."""
        from pyiceberg.exceptions import CommitFailedException, ValidationException

        for attempt in range(COMMIT_ATTEMPTS):
            table = self.catalog.load_table(f"{NAMESPACE}.{name}")
            work = duckdb.connect()
            try:
                with warnings.catch_warnings():
                    # A delete that matches nothing (a version with no rows left) is no news.
                    warnings.filterwarnings("ignore", "Delete operation did not match any records")
                    return change(work, table)
            except (CommitFailedException, ValidationException):  # another loader committed first
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise WarehouseError(f"could not commit to the Iceberg table {name}: other loaders kept "
                                         f"committing first ({COMMIT_ATTEMPTS} attempts)") from None
                time.sleep(min(0.05 * 2**attempt, 2.0) * (0.5 + random.random()))
            finally:
                work.close()
        return None

    def _replace_rows(self, table: Any, file_ids: list[int], chunks: Iterable[Any]) -> None:
        """One commit: the rows of ``file_ids`` out, the ``chunks`` (Arrow tables) in."""
        from pyiceberg.expressions import In

        with table.transaction() as tx:
            if file_ids:
                tx.delete(In("file_id", file_ids))
            for rows in chunks:
                if rows is not None and rows.num_rows:
                    tx.append(fit(rows, table))

    def _merge_dimensions(self, staged: dict[str, Any]) -> None:
        merges = (("dim_date", "merge_date", lambda work, table, rows: self._add_new(work, table, rows, "date_key")),
                  ("dim_branch", "merge_branch", self._merge_branches),
                  ("dim_product", "merge_product", self._merge_products))
        for name, relation, merge in merges:
            rows = staged[relation]
            if rows.num_rows:  # a batch of failed files brings none: no table is read
                self._commit(name, lambda work, table, merge=merge, rows=rows: merge(work, table, rows))

    @staticmethod
    def _add_new(work: duckdb.DuckDBPyConnection, table: Any, incoming: Any, key: str) -> None:
        work.register("current_rows", table.scan(selected_fields=(key,)).to_arrow())
        work.register("incoming", incoming)
        new = work.sql(f"SELECT * FROM incoming WHERE {key} NOT IN (SELECT {key} FROM current_rows)").to_arrow_table()
        if new.num_rows:
            table.append(fit(new, table))

    @staticmethod
    def _rewrite_if_changed(work: duckdb.DuckDBPyConnection, table: Any, merged_sql: str) -> None:
        """Overwrite a small table with ``merged_sql`` (over ``current_rows``) when it differs."""
        merged = work.sql(merged_sql).to_arrow_table()
        work.register("merged_rows", merged)
        changed = work.execute("""SELECT count(*) FROM (
            (SELECT * FROM merged_rows EXCEPT ALL SELECT * FROM current_rows)
            UNION ALL (SELECT * FROM current_rows EXCEPT ALL SELECT * FROM merged_rows))""").fetchone()[0]
        if changed:
            table.overwrite(fit(merged, table))

    def _merge_branches(self, work: duckdb.DuckDBPyConnection, table: Any, incoming: Any) -> None:
        # As MERGE_DIMENSIONS (load_sql.py): new branches added; a display name that was
        # all lower case takes a spelling that is not; the earliest first sale wins.
        work.register("current_rows", table.scan().to_arrow())
        work.register("incoming", incoming)
        self._rewrite_if_changed(work, table, """
            SELECT c.branch_key, c.branch_id,
                   CASE WHEN c.name = lower(c.name) AND i.name IS NOT NULL AND i.name <> lower(i.name)
                        THEN i.name ELSE c.name END AS name,
                   CASE WHEN i.first_seen IS NOT NULL AND (c.first_seen IS NULL OR i.first_seen < c.first_seen)
                        THEN i.first_seen ELSE c.first_seen END AS first_seen
            FROM current_rows c LEFT JOIN incoming i USING (branch_key)
            UNION ALL
            SELECT branch_key, branch_id, name, first_seen FROM incoming
            WHERE branch_key NOT IN (SELECT branch_key FROM current_rows)""")

    def _merge_products(self, work: duckdb.DuckDBPyConnection, table: Any, incoming: Any) -> None:
        # New products added, and put in their category (the run's start moved the others).
        self._sync_products(work, table, incoming)

    def _recategorise(self, work: duckdb.DuckDBPyConnection, table: Any) -> int:
        return self._sync_products(work, table)

    def _sync_products(self, work: duckdb.DuckDBPyConnection, table: Any, incoming: Any = None) -> int:
        """``dim_product`` with the ``incoming`` products it lacks, each in its category by
        ``categories.sync`` (only the new ones when products come in; every one at a run's
        start), written back when anything changed; how many products moved category."""
        work.register("current_rows", table.scan().to_arrow())
        work.execute("CREATE TEMP TABLE dim_product AS SELECT product_key, size, name, flavour, category "
                     "FROM current_rows")
        added = 0
        if incoming is not None:
            work.register("incoming", incoming)
            added = work.execute("""INSERT INTO dim_product
                                    SELECT product_key, size, name, flavour, CAST(NULL AS VARCHAR) FROM incoming
                                    WHERE product_key NOT IN (SELECT product_key FROM current_rows)""").fetchone()[0]
            if not added:
                return 0
        moved = categories.sync(lambda sql, params: work.execute(sql, list(params) or None).fetchall(),
                                self.categories, new_only=incoming is not None)
        if added or moved:
            table.overwrite(fit(work.sql("SELECT * FROM dim_product").to_arrow_table(), table))
        return moved

    def _merge_customers(self, incoming: Any) -> None:
        if incoming.num_rows:
            self._commit("dim_customer", lambda work, table: self._merge_customer_rows(work, table, incoming))

    @staticmethod
    def _merge_customer_rows(work: duckdb.DuckDBPyConnection, table: Any, incoming: Any) -> None:
        """The batch's customers: new ones added; known ones whose first sale is earlier in
        this batch (the earliest day, then the lowest branch key) rewritten."""
        from pyiceberg.expressions import In

        work.register("incoming", incoming)
        work.register("current_rows", table.scan().to_arrow())
        changes = work.sql(f"""
            SELECT i.customer_key, i.first_seen, i.first_branch_key, c.customer_key IS NOT NULL AS known
            FROM incoming i LEFT JOIN current_rows c USING (customer_key)
            WHERE c.customer_key IS NULL OR i.first_seen < c.first_seen
               OR (i.first_seen = c.first_seen AND i.first_branch_key < coalesce(c.first_branch_key, {NO_KEY}))
        """).to_arrow_table()
        if not changes.num_rows:
            return
        known = [k for k, was in zip(changes["customer_key"].to_pylist(), changes["known"].to_pylist(), strict=True)
                 if was]
        if len(known) > REWRITE_CUSTOMERS_FROM:
            # Many known customers first seen earlier (batches out of date order): the
            # whole dimension rewritten is cheaper than deleting each by key.
            work.register("changes", changes)
            merged = work.sql("""
                SELECT c.customer_key, coalesce(h.first_seen, c.first_seen) AS first_seen,
                       CASE WHEN h.customer_key IS NULL THEN c.first_branch_key ELSE h.first_branch_key END
                           AS first_branch_key
                FROM current_rows c LEFT JOIN changes h ON h.customer_key = c.customer_key AND h.known
                UNION ALL SELECT customer_key, first_seen, first_branch_key FROM changes WHERE NOT known""")
            table.overwrite(fit(merged.to_arrow_table(), table))
            return
        with table.transaction() as tx:
            if known:
                tx.delete(In("customer_key", known))
            tx.append(fit(changes.drop_columns(["known"]), table))

    def _customers_of(self, file_ids: list[int]) -> Any:
        """The customers of the rows about to be deleted (``file_ids``): settled after."""
        from pyiceberg.expressions import And, In, NotNull

        facts = self.catalog.load_table(f"{NAMESPACE}.fact_sale")
        return facts.scan(row_filter=And(In("file_id", file_ids), NotNull("customer_key")),
                          selected_fields=("customer_key",)).to_arrow()

    def _settle_customers(self, lost: Any) -> None:
        """Each customer of deleted rows takes its first sale from the facts that remain;
        one with no sale left leaves the dimension."""
        from pyiceberg.expressions import In

        keys = sorted(set(lost["customer_key"].to_pylist()))

        def settle(work: duckdb.DuckDBPyConnection, table: Any) -> None:
            # The facts as they are now: read again on every attempt.
            facts = self.catalog.load_table(f"{NAMESPACE}.fact_sale")
            remaining = facts.scan(row_filter=In("customer_key", keys),
                                   selected_fields=("customer_key", "date_key", "branch_key")).to_arrow()
            work.register("remaining", remaining)
            firsts = work.sql("""
                SELECT customer_key,
                       make_date(first_key // 10000, first_key // 100 % 100, first_key % 100) AS first_seen,
                       first_branch_key
                FROM (SELECT customer_key, min(date_key) AS first_key,
                             arg_min(branch_key, (date_key::HUGEINT << 64) + branch_key) AS first_branch_key
                      FROM remaining GROUP BY customer_key)""").to_arrow_table()
            with table.transaction() as tx:
                tx.delete(In("customer_key", keys))
                if firsts.num_rows:
                    tx.append(fit(firsts, table))

        self._commit("dim_customer", settle)


