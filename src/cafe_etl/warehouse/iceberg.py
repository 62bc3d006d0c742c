"""The Apache Iceberg warehouse (DESIGN §12): the star schema as Iceberg tables, for a
warehouse that Spark, Trino, Athena, Snowflake or pyiceberg read as well as cafe-etl.

``iceberg:///PATH``: a SQL catalog named ``cafe_etl`` in ``PATH/catalog.db`` (SQLite),
namespace ``cafe_etl``, data and metadata files under ``PATH``.
``iceberg+postgresql://USER@HOST:PORT/DB?warehouse=s3://BUCKET/PREFIX``: the catalog in
that PostgreSQL database, data and metadata files in S3 (``--s3-endpoint-url`` or
``AWS_ENDPOINT_URL_S3`` for an S3-compatible store).

What is Iceberg: every table another engine needs (dimensions, facts, the quarantine,
the per-file aggregates), with the same names, columns and meaning as on the SQL
warehouses. Facts and aggregates are partitioned by ``date_key`` (a number: a
free-text partition value is what other engines misread). What is not: the ledger
(``etl_file``, ``etl_run``, ``etl_schema``), which needs row-level claims under a
lock. It lives in a SQL database beside the catalog (``PATH/ledger.duckdb``; the
PostgreSQL database of ``iceberg+postgresql``), kept by the same ledger code as every
SQL warehouse, so claims, take-overs and exactly-once are theirs; the star tables
that schema also creates there stay empty.

A batch is loaded in this order, each step one Iceberg commit per table it changes:

1. dimensions: dates, branches and products read whole (they are small), merged as
   the SQL warehouses merge them, written back when changed; customers: the batch's
   new ones appended, those first seen earlier than known rewritten;
2. every per-file table: one commit that deletes the rows of the batch's own file ids
   and of the versions it replaces, and appends the batch's rows, so a reader sees a
   replaced version or its replacement, never both or neither;
3. the customers of replaced versions settled again from the facts that remain;
4. the ledger, in one transaction of its database.

Iceberg commits one table at a time: between two commits of a batch another engine
may see one table ahead of another, for a moment. A crash between steps 2 and 4 leaves
the batch's files claimed; the run that takes the claims over deletes those file ids'
rows in the commit that adds them again, so nothing is counted twice. Commits from
several loaders are optimistic: one that lost the race is made again on the new state.

Reads: a DuckDB connection to the ledger (read-only), with each Iceberg table a query
names read through pyiceberg into Arrow and put in front of it: the same SQL as the
DuckDB warehouse's, on the same numbers.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb

from cafe_etl import categories
from cafe_etl.config import ENV_S3_ENDPOINT
from cafe_etl.engine import Engine, EnginePool
from cafe_etl.errors import ConfigError, WarehouseError, WarehouseMissing
from cafe_etl.rules import FileStatus
from cafe_etl.warehouse import schema
from cafe_etl.warehouse.base import (
    FILE_TABLES,
    FileRecord,
    LedgerEntry,
    LoadSession,
    NewFile,
    PartLoad,
    Reader,
    RunTotals,
    Warehouse,
    cleanup,
)
from cafe_etl.warehouse.duckdb import DuckDBReader
from cafe_etl.warehouse.load_sql import _AGGREGATES, _FACTS, CUSTOMER_INPUT, DIMENSION_INPUTS, NO_KEY, _select

NAMESPACE = "cafe_etl"
CATALOG = "cafe_etl"
DIMENSIONS = ("dim_date", "dim_time", "dim_branch", "dim_product", "dim_payment_method", "dim_customer")
TABLES = DIMENSIONS + FILE_TABLES
PARTITIONED = {"fact_sale", "fact_sale_item", "agg_product_day", "agg_pair_day", "agg_sale_hour",
               "agg_customer_day"}  # by date_key
COMMIT_ATTEMPTS = 12
REWRITE_CUSTOMERS_FROM = 1000  # known customers to move in one batch above which the dimension is rewritten
# Time travel reaches back this far; older snapshots are forgotten when a run ends.
SNAPSHOT_RETENTION = timedelta(days=7)
TABLE_PROPERTIES = {
    # Old metadata files are deleted after each commit, the last few kept.
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    # A commit that another loader beat is made again from the start on the new state
    # (IcebergLoadSession._commit), never replayed by pyiceberg: a replayed read-merge-
    # write of a dimension would add a customer twice, and a replayed delete could keep
    # a file it had rewritten beside its rewrite.
    "commit.retry.num-retries": "0",
}


def _needs_pyiceberg() -> None:
    try:
        import pyiceberg  # noqa: F401
    except ImportError:
        raise ConfigError("the Iceberg warehouse needs pyiceberg: pip install 'cafe-etl[iceberg]'") from None


# The schema of every table, as DuckDB spells it (from tables.sql, in an in-memory
# database): what the Iceberg tables are created from, and the rows seeded there.
def _template() -> duckdb.DuckDBPyConnection:
    from cafe_etl.warehouse.duckdb import HOOKS

    con = duckdb.connect()
    for statement in schema.statements(HOOKS):
        con.execute(statement)
    return con


class IcebergWarehouse(Warehouse):
    def __init__(self, url: str, s3_endpoint_url: str | None = None, lock_wait: float | None = None) -> None:
        self.url = url
        self.lock_wait = lock_wait
        scheme, _, rest = url.partition("://")
        if scheme == "iceberg":
            path = rest[1:] if rest.startswith("/") else ""
            if not path:
                raise ConfigError(f"an Iceberg warehouse URL is iceberg:///path/to/folder, not {url!r}")
            self.path = os.path.abspath(path)
            self.catalog_uri = f"sqlite:///{os.path.join(self.path, 'catalog.db')}"
            self.location = f"file://{self.path}"
            self.ledger_url = f"duckdb:///{os.path.join(self.path, 'ledger.duckdb')}"
            self.properties: dict[str, str] = {}
        else:  # iceberg+postgresql://…?warehouse=s3://bucket/prefix
            parts = urlsplit(url)
            query = parse_qs(parts.query)
            location = (query.get("warehouse") or [""])[0]
            if not location:
                raise ConfigError("an iceberg+postgresql:// warehouse URL names where its data files go: "
                                  "…?warehouse=s3://bucket/prefix")
            rest_query = "&".join(f"{k}={v[0]}" for k, v in query.items() if k != "warehouse")
            database = parts._replace(scheme="postgresql", query=rest_query).geturl()
            self.path = None
            self.catalog_uri = database.replace("postgresql://", "postgresql+psycopg://", 1)
            self.location = location.rstrip("/")
            self.ledger_url = database
            endpoint = s3_endpoint_url or next((os.environ[n] for n in ENV_S3_ENDPOINT if os.environ.get(n)), None)
            self.properties = {"s3.endpoint": endpoint} if endpoint else {}
            for name, key in (("AWS_REGION", "s3.region"), ("AWS_DEFAULT_REGION", "s3.region")):
                if os.environ.get(name) and key not in self.properties:
                    self.properties[key] = os.environ[name]

    def describe(self) -> str:
        if self.path:
            return f"iceberg:///{self.path}"
        return f"iceberg+{_without_password(self.ledger_url)} ({self.location})"

    def _ledger(self) -> Warehouse:
        from cafe_etl.warehouse import open_warehouse

        return open_warehouse(self.ledger_url, lock_wait=self.lock_wait)

    def catalog(self, create: bool = False) -> Any:
        """The pyiceberg SQL catalog ``cafe_etl``; ``create``: with the namespace and tables made."""
        _needs_pyiceberg()
        from pyiceberg.catalog.sql import SqlCatalog

        if self.path and create:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        # Its retries of a commit another loader beat are routine here: not the user's concern.
        logging.getLogger("pyiceberg.table").setLevel(logging.ERROR)
        for attempt in range(5):
            try:
                catalog = SqlCatalog(CATALOG, uri=self.catalog_uri, warehouse=self.location, **self.properties)
                if create:
                    catalog.create_namespace_if_not_exists(NAMESPACE)
                    _create_tables(catalog)
                return catalog
            except Exception:  # noqa: BLE001 - loaders starting together race to create the catalog's tables
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextmanager
    def load_session(self, pool: EnginePool) -> Iterator[IcebergLoadSession]:
        if self.path:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        ledger = self._ledger()
        with ledger.load_session(pool) as ledger_session:
            catalog = self.catalog(create=True)
            yield IcebergLoadSession(catalog, ledger_session)

    @contextmanager
    def reader(self, time_limit: float | None = None, wait: float = 0.0) -> Iterator[Reader]:
        if self.path and not os.path.exists(os.path.join(self.path, "catalog.db")):
            raise WarehouseMissing(f"no warehouse at {self.describe()}: run `cafe-etl ingest` (or `cafe-etl demo`) "
                                   "first")
        with self._ledger().reader(time_limit, wait) as ledger_reader:
            if isinstance(ledger_reader, DuckDBReader):
                yield IcebergReader(self.catalog(), ledger_reader)
                return
            # A ledger in PostgreSQL: its tables copied into an in-memory DuckDB of the
            # same schema, so the one SQL dialect reads ledger and Iceberg tables together.
            con = _ledger_copy(ledger_reader)
            try:
                yield IcebergReader(self.catalog(), DuckDBReader(con, self.describe(), time_limit))
            finally:
                con.close()


LEDGER_TABLES = ("etl_schema", "etl_file", "etl_run")


def _ledger_copy(ledger: Reader) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the whole schema, holding the ledger's rows read from ``ledger``."""
    con = _template()
    for name in LEDGER_TABLES:
        columns = [row[0] for row in con.execute(f"DESCRIBE {name}").fetchall()]
        rows = ledger.query(f"SELECT {', '.join(columns)} FROM {name}")
        if rows:
            import pyarrow as pa

            types = con.sql(f"SELECT {', '.join(columns)} FROM {name}").to_arrow_table().schema
            columns_of_rows = zip(*rows, strict=True)
            arrays = [pa.array(list(values), type=field.type)
                      for values, field in zip(columns_of_rows, types, strict=True)]
            con.register("ledger_rows", pa.Table.from_arrays(arrays, schema=types))
            con.execute(f"INSERT INTO {name} ({', '.join(columns)}) SELECT * FROM ledger_rows").fetchall()
            con.unregister("ledger_rows")
    return con


@contextmanager
def _storage_errors(where: str) -> Iterator[None]:
    """What the catalog's database or the file store refuse (unreachable, full, gone) is
    the warehouse's trouble, said in a sentence; the run stops and its claims wait."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except OSError as exc:
        raise WarehouseError(f"{where} cannot read or write its files: {exc}") from None
    except SQLAlchemyError as exc:
        raise WarehouseError(f"{where} cannot reach its catalog database: {type(exc).__name__}") from None


def _without_password(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1@", url)


def _create_tables(catalog: Any) -> None:
    """Every table of the star schema, once (another loader may create them at the same time)."""
    from pyiceberg.exceptions import TableAlreadyExistsError

    existing = {name for _, name in catalog.list_tables(NAMESPACE)}
    missing = [t for t in TABLES if t not in existing]
    if not missing:
        return
    template = _template()
    try:
        for name in missing:
            rows = template.sql(f"SELECT * FROM {name}").to_arrow_table()
            try:
                table = catalog.create_table(f"{NAMESPACE}.{name}", schema=rows.schema,
                                             properties=TABLE_PROPERTIES)
            except TableAlreadyExistsError:
                continue
            if name in PARTITIONED:
                with table.update_spec() as spec:
                    spec.add_identity("date_key")
            if rows.num_rows:  # dim_time, dim_payment_method: seeded by the schema
                table.append(_fit(rows, table))
    finally:
        template.close()


def _fit(rows: Any, table: Any) -> Any:
    """``rows`` cast to ``table``'s columns (Iceberg has no 16-bit integers, for one)."""
    return rows.select(table.schema().column_names).cast(table.schema().as_arrow())


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
        self.categories = ledger.categories

    # The ledger -------------------------------------------------------------------

    def start_run(self, command: str) -> int:
        return self.ledger.start_run(command)

    def finish_run(self, run_id: int, totals: RunTotals, status: Any, error: str | None = None) -> None:
        self.ledger.finish_run(run_id, totals, status, error)
        with self._writing:
            self.expire_snapshots()

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
                table.maintenance.expire_snapshots().by_ids(old).commit()
                expired += len(old)
        return expired

    def ledger_transaction(self) -> AbstractContextManager[None]:
        return self.ledger.ledger_transaction()

    def lookup(self, files: Sequence[NewFile]) -> list[LedgerEntry]:
        return self.ledger.lookup(files)

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
        with self._writing:
            return self._commit("dim_product", lambda work, table: self._recategorise(work, table, new_only=False))

    def load(self, engine: Engine, records: Sequence[FileRecord], run_id: int) -> None:
        with _storage_errors(self.describe()):
            self._load(engine, records, run_id)

    def describe(self) -> str:
        return f"the Iceberg catalog {CATALOG}"

    def _load(self, engine: Engine, records: Sequence[FileRecord], run_id: int) -> None:
        clear = sorted(set(cleanup(records)) | {r.file_id for r in records if r.file_id not in self._fresh})
        staged = {name: engine.con.sql(select).to_arrow_table() for name, select in DIMENSION_INPUTS.items()}
        staged["merge_customer"] = engine.con.sql(CUSTOMER_INPUT).to_arrow_table()
        rows = {table: engine.con.sql(_select(columns, relation, run_id)).to_arrow_table()
                for table, (columns, relation) in (_FACTS | _AGGREGATES).items()}
        with self._writing:
            self._merge_dimensions(staged)
            lost = self._customers_of(clear) if clear else None
            self._merge_customers(staged["merge_customer"])
            for table in FILE_TABLES:
                self._commit(table, lambda work, t, table=table: self._replace_rows(t, clear, [rows[table]]))
            if lost is not None and lost.num_rows:
                self._settle_customers(lost)
        # The ledger last, through the engine's connection to its database.
        self.ledger._attempt(engine, lambda con: self._write_ledger(con, records, run_id))

    def _write_ledger(self, con: Any, records: Sequence[FileRecord], run_id: int) -> None:
        with self.ledger._transaction(con):
            self.ledger._write_ledger(con, records, run_id)

    @contextmanager
    def load_parts(self, engine: Engine, file_id: int, run_id: int, clear_first: bool) -> Iterator[PartLoad]:
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

        with table.transaction() as tx, warnings.catch_warnings():
            # Deleting the batch's own ids usually matches nothing: that is the point.
            warnings.filterwarnings("ignore", "Delete operation did not match any records")
            if file_ids:
                tx.delete(In("file_id", file_ids))
            for rows in chunks:
                if rows is not None and rows.num_rows:
                    tx.append(_fit(rows, table))

    def _merge_dimensions(self, staged: dict[str, Any]) -> None:
        self._commit("dim_date", lambda work, table: self._add_new(work, table, staged["merge_date"], "date_key"))
        self._commit("dim_branch", lambda work, table: self._merge_branches(work, table, staged["merge_branch"]))
        self._commit("dim_product", lambda work, table: self._merge_products(work, table, staged["merge_product"]))

    @staticmethod
    def _add_new(work: duckdb.DuckDBPyConnection, table: Any, incoming: Any, key: str) -> None:
        work.register("current_rows", table.scan(selected_fields=(key,)).to_arrow())
        work.register("incoming", incoming)
        new = work.sql(f"SELECT * FROM incoming WHERE {key} NOT IN (SELECT {key} FROM current_rows)").to_arrow_table()
        if new.num_rows:
            table.append(_fit(new, table))

    @staticmethod
    def _rewrite_if_changed(work: duckdb.DuckDBPyConnection, table: Any, merged_sql: str) -> None:
        """Overwrite a small table with ``merged_sql`` (over ``current_rows``) when it differs."""
        merged = work.sql(merged_sql).to_arrow_table()
        changed = work.execute(f"""SELECT count(*) FROM (
            (SELECT * FROM ({merged_sql}) EXCEPT ALL SELECT * FROM current_rows)
            UNION ALL (SELECT * FROM current_rows EXCEPT ALL SELECT * FROM ({merged_sql})))""").fetchone()[0]
        if changed:
            table.overwrite(_fit(merged, table))

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
        work.register("incoming", incoming)
        work.register("current_rows", table.scan().to_arrow())
        if not work.execute("SELECT count(*) FROM incoming "
                        "WHERE product_key NOT IN (SELECT product_key FROM current_rows)").fetchone()[0]:
            return
        work.execute("""CREATE TEMP TABLE dim_product AS
                        SELECT product_key, size, name, flavour, category FROM current_rows
                        UNION ALL
                        SELECT product_key, size, name, flavour, CAST(NULL AS VARCHAR) FROM incoming
                        WHERE product_key NOT IN (SELECT product_key FROM current_rows)""")
        categories.sync(lambda sql, params: work.execute(sql, list(params) or None).fetchall(), self.categories,
                        new_only=True)
        table.overwrite(_fit(work.sql("SELECT * FROM dim_product").to_arrow_table(), table))

    def _recategorise(self, work: duckdb.DuckDBPyConnection, table: Any, new_only: bool) -> int:
        work.register("current_arrow", table.scan().to_arrow())
        work.execute("CREATE TEMP TABLE dim_product AS SELECT * FROM current_arrow")
        moved = categories.sync(lambda sql, params: work.execute(sql, list(params) or None).fetchall(),
                                self.categories, new_only=new_only)
        if moved:
            table.overwrite(_fit(work.sql("SELECT * FROM dim_product").to_arrow_table(), table))
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
            table.overwrite(_fit(merged.to_arrow_table(), table))
            return
        with table.transaction() as tx:
            if known:
                tx.delete(In("customer_key", known))
            tx.append(_fit(changes.drop_columns(["known"]), table))

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
        facts = self.catalog.load_table(f"{NAMESPACE}.fact_sale")
        remaining = facts.scan(row_filter=In("customer_key", keys),
                               selected_fields=("customer_key", "date_key", "branch_key")).to_arrow()

        def settle(work: duckdb.DuckDBPyConnection, table: Any) -> None:
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
                    tx.append(_fit(firsts, table))

        self._commit("dim_customer", settle)


class IcebergPartLoad(PartLoad):
    """A file too large for one batch, loaded slice by slice and committed once, as a
    batch of one file: one commit per table. Until then each slice's facts wait as
    Parquet in a private folder (they hold no personal data) and its aggregates are
    added up in a DuckDB of its own: a file's sales are disjoint between slices, so
    counts of sales, items and money add up; its distinct customers per day and branch
    are counted at the end from the customer keys kept; its customers' first sales are
    the earliest of every slice's."""

    _ADDED = {  # how each per-file aggregate's slices add up
        "agg_product_day": "file_id, date_key, branch_key, product_key, CAST(sum(quantity) AS INTEGER) AS quantity, "
                           "sum(revenue) AS revenue, CAST(sum(sales) AS INTEGER) AS sales",
        "agg_pair_day": "file_id, date_key, branch_key, a_key, b_key, CAST(sum(sales) AS INTEGER) AS sales",
        "agg_sale_hour": "file_id, date_key, branch_key, hour, CAST(sum(transactions) AS INTEGER) AS transactions, "
                         "CAST(sum(items) AS INTEGER) AS items, sum(revenue) AS revenue",
    }

    def __init__(self, session: IcebergLoadSession, file_id: int, run_id: int, clear_first: bool) -> None:
        self.session, self.file_id, self.run_id, self.clear_first = session, file_id, run_id, clear_first
        self.folder = tempfile.mkdtemp(prefix="cafe-etl-parts-")  # 0700
        self.work = duckdb.connect(config={"temp_directory": ""})
        self.parts: dict[str, list[str]] = {table: [] for table in _FACTS}
        self.merged: set[tuple] = set()  # dimension rows merged already
        self.slices = 0

    def add(self, engine: Engine) -> None:
        session = self.session
        staged = {name: engine.con.sql(select).to_arrow_table() for name, select in DIMENSION_INPUTS.items()}
        rows = {(name, *row.values()) for name, table in staged.items() for row in table.to_pylist()}
        if not rows <= self.merged:  # a slice's dimension rows are mostly the previous slice's
            with session._writing:
                session._merge_dimensions(staged)  # as for a batch: a product nobody bought yet is harmless
            self.merged |= rows
        self.slices += 1
        for table, (columns, relation) in _FACTS.items():
            path = os.path.join(self.folder, f"{table}-{self.slices}.parquet")
            engine.run(f"COPY ({_select(columns, relation, self.run_id)}) TO '{path}' (FORMAT parquet)")
            self.parts[table].append(path)
        for table, relation in (("agg_product_day", "out_product_day"), ("agg_pair_day", "out_pair_day"),
                                ("agg_sale_hour", "out_sale_hour")):
            self._keep(table, engine.con.sql(f"SELECT * FROM {relation}").to_arrow_table())
        self._keep("seen_customer", engine.con.sql(
            "SELECT DISTINCT file_id, date_key, branch_key, customer_key FROM out_sale "
            "WHERE customer_key IS NOT NULL").to_arrow_table())
        self._keep("first_sale", engine.con.sql(CUSTOMER_INPUT).to_arrow_table())

    def _keep(self, name: str, rows: Any) -> None:
        self.work.register("slice_rows", rows)
        exists = self.work.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()
        if exists[0][0]:
            self.work.execute(f"INSERT INTO {name} SELECT * FROM slice_rows").fetchall()
        else:
            self.work.execute(f"CREATE TABLE {name} AS SELECT * FROM slice_rows").fetchall()
        self.work.unregister("slice_rows")

    def finish(self, record: FileRecord) -> None:
        with _storage_errors(self.session.describe()):
            self._finish(record)

    def _finish(self, record: FileRecord) -> None:
        import pyarrow.parquet as pq

        session = self.session
        rows: dict[str, Any] = dict(self.parts)
        for table, select in self._ADDED.items():
            rows[table] = self._summed(table, select)
        rows["agg_customer_day"] = self._table(
            "SELECT file_id, date_key, branch_key, CAST(count(DISTINCT customer_key) AS INTEGER) AS customers "
            "FROM seen_customer GROUP BY file_id, date_key, branch_key")
        firsts = self._table(f"""
            SELECT customer_key, first_seen, first_branch_key FROM (
                SELECT customer_key, first_seen, first_branch_key,
                       row_number() OVER (PARTITION BY customer_key
                                          ORDER BY first_seen, coalesce(first_branch_key, {NO_KEY})) AS n
                FROM first_sale) WHERE n = 1""")
        replaced = [record.replaces] if record.status == FileStatus.LOADED and record.replaces is not None else []
        clear = sorted({*replaced, *([] if self.file_id in session._fresh else [self.file_id])})
        with session._writing:
            lost = session._customers_of(clear) if replaced or self.clear_first else None
            session._merge_customers(firsts)
            for table in FILE_TABLES:
                kept = rows.get(table)
                # Facts a slice at a time (read when appended: memory stays one slice's).
                chunks = (lambda kept=kept: (pq.read_table(p) for p in kept)) if isinstance(kept, list) else (
                    lambda kept=kept: [kept])
                session._commit(table, lambda _, t, chunks=chunks: session._replace_rows(t, clear, chunks()))
            if lost is not None and lost.num_rows:
                session._settle_customers(lost)
        with session.ledger._part_connection() as con:
            session._write_ledger(con, [record], self.run_id)

    def _summed(self, table: str, select: str) -> Any:
        if not self._has(table):
            return None
        keys = [c.strip() for c in select.split(",") if " AS " not in c and "(" not in c]
        return self._table(f"SELECT {select} FROM {table} GROUP BY {', '.join(keys)}")

    def _has(self, name: str) -> bool:
        return bool(self.work.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?",
                                      [name]).fetchall()[0][0])

    def _table(self, sql: str) -> Any:
        return self.work.sql(sql).to_arrow_table()

    def close(self) -> None:
        self.work.close()
        shutil.rmtree(self.folder, ignore_errors=True)


# Reads ----------------------------------------------------------------------------

_NAMES = re.compile(r"\b(" + "|".join(TABLES) + r")\b")


class IcebergReader(Reader):
    """The ledger's reader, with each Iceberg table a query names put in front of its
    (empty) namesake as Arrow, read once per reader."""

    def __init__(self, catalog: Any, ledger: Reader) -> None:
        self.catalog = catalog
        self.ledger = ledger
        self._loaded: set[str] = set()
        self._con = getattr(ledger, "con", None)

    def limit_time(self, seconds: float) -> None:
        self.ledger.limit_time(seconds)

    def regex_match(self, expression: str) -> str:
        return self.ledger.regex_match(expression)

    def query(self, sql: str, params: Sequence[Any] = (), *, max_rows: int | None = None) -> list[tuple]:
        with _storage_errors(f"the Iceberg catalog {CATALOG}"):
            for name in set(_NAMES.findall(sql)) - self._loaded:
                self._put(name)
        return self.ledger.query(sql, params, max_rows=max_rows)

    def _put(self, name: str) -> None:
        self._con.register(f"iceberg_{name}", _scannable(self.catalog.load_table(f"{NAMESPACE}.{name}")))
        self._con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM iceberg_{name}").fetchall()
        self._loaded.add(name)


def _scannable(table: Any) -> Any:
    """The table's current snapshot for DuckDB to scan: its data files as one Arrow
    dataset, so DuckDB pushes each query's filters (a period's ``date_key`` range, above
    all) and columns down into the Parquet reads and skips what they rule out. A
    snapshot with delete files (another engine's merge-on-read deletes) is read whole
    through pyiceberg, which applies them."""
    import pyarrow.dataset as ds
    from pyiceberg.io.pyarrow import PyArrowFileIO

    schema = table.schema().as_arrow()
    tasks = list(table.scan().plan_files())
    if not tasks:
        return schema.empty_table()
    if any(task.delete_files for task in tasks) or not isinstance(table.io, PyArrowFileIO):
        return table.scan().to_arrow()
    first = urlsplit(tasks[0].file.file_path)
    filesystem = table.io.fs_by_scheme(first.scheme or "file", first.netloc)
    paths = [_in_filesystem(task.file.file_path) for task in tasks]
    return ds.dataset(paths, schema=schema, format="parquet", filesystem=filesystem)


def _in_filesystem(uri: str) -> str:
    """A data file's path as its PyArrow filesystem names it: bucket/key, or a local path."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return parts.path
    return f"{parts.netloc}{parts.path}"
