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

1. dates, branches and products: read whole (they are small), merged as the SQL
   warehouses merge them, written back when changed;
2. every per-file table: one commit that deletes the rows of the versions the batch
   replaces or processes again (and of claims whose loader died after committing),
   and appends the batch's rows, so a reader sees a replaced version or its
   replacement, never both or neither;
3. customers: the batch's new ones appended, those first seen earlier than known
   rewritten; the customers of deleted rows settled again from the facts that remain;
4. the ledger, in one transaction of its database.

Iceberg commits one table at a time: between two commits of a batch another engine
may see one table ahead of another, for a moment. A crash between steps 2 and 4 leaves
the batch's files claimed; the next load that meets those claims deletes their rows
(in the commit that adds them again, if the same version comes back), so nothing is
counted twice. Commits from several loaders are optimistic: one that lost the race is
made again from the start on the new state.

Reads: a DuckDB connection to the ledger (read-only), with each Iceberg table a query
names put in front of its empty namesake as an Arrow dataset over the table's current
data files, so DuckDB pushes a query's date range and columns down into the Parquet
reads: the same SQL as the DuckDB warehouse's, on the same numbers.

Modules: ``tables`` (names, properties, creation), ``loading`` (the load session),
``parts`` (a large file in slices), ``reading`` (the reader); this one, the URLs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from cafe_etl.config import ENV_S3_ENDPOINT
from cafe_etl.engine import EnginePool
from cafe_etl.errors import ConfigError, WarehouseMissing
from cafe_etl.warehouse.base import Reader, Warehouse
from cafe_etl.warehouse.duckdb import DuckDBReader
from cafe_etl.warehouse.iceberg.loading import IcebergLoadSession
from cafe_etl.warehouse.iceberg.parts import IcebergPartLoad
from cafe_etl.warehouse.iceberg.reading import IcebergReader, ledger_copy
from cafe_etl.warehouse.iceberg.tables import (
    CATALOG,
    NAMESPACE,
    create_tables,
    needs_pyiceberg,
    storage_errors,
)


class IcebergWarehouse(Warehouse):
    def __init__(self, url: str, lock_wait: float | None = None) -> None:
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
            query = parse_qs(parts.query, keep_blank_values=True)
            location = (query.get("warehouse") or [""])[0]
            if not location:
                raise ConfigError("an iceberg+postgresql:// warehouse URL names where its data files go: "
                                  "…?warehouse=s3://bucket/prefix")
            rest_query = urlencode([(k, v) for k, values in query.items() if k != "warehouse" for v in values])
            database = parts._replace(scheme="postgresql", query=rest_query).geturl()
            self.path = None
            self.catalog_uri = database.replace("postgresql://", "postgresql+psycopg://", 1)
            self.location = location.rstrip("/")
            self.ledger_url = database
            endpoint = next((os.environ[n] for n in ENV_S3_ENDPOINT if os.environ.get(n)), None)
            self.properties = {"s3.endpoint": endpoint} if endpoint else {}
            for name, key in (("AWS_REGION", "s3.region"), ("AWS_DEFAULT_REGION", "s3.region")):
                if os.environ.get(name) and key not in self.properties:
                    self.properties[key] = os.environ[name]

    def describe(self) -> str:
        if self.path:
            return f"iceberg:///{self.path}"
        return f"iceberg+{self._ledger().describe()} ({self.location})"  # the ledger's: no password

    def _ledger(self) -> Warehouse:
        from cafe_etl.warehouse import open_warehouse

        return open_warehouse(self.ledger_url, lock_wait=self.lock_wait)

    def catalog(self, create: bool = False) -> Any:
        """The pyiceberg SQL catalog ``cafe_etl``; ``create``: with the namespace and tables made."""
        needs_pyiceberg()
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
                    create_tables(catalog)
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
            with storage_errors(self.describe()):
                catalog = self.catalog(create=True)
            yield IcebergLoadSession(catalog, ledger_session)

    @contextmanager
    def reader(self, time_limit: float | None = None, wait: float = 0.0) -> Iterator[Reader]:
        if self.path and not os.path.exists(os.path.join(self.path, "catalog.db")):
            raise WarehouseMissing(f"no warehouse at {self.describe()}: run `cafe-etl ingest` (or `cafe-etl demo`) "
                                   "first")
        with self._ledger().reader(time_limit, wait) as ledger_reader:
            with storage_errors(self.describe()):
                catalog = self.catalog()
            if isinstance(ledger_reader, DuckDBReader):
                yield IcebergReader(catalog, ledger_reader)
                return
            # A ledger in PostgreSQL: its tables copied into an in-memory DuckDB of the
            # same schema, so the one SQL dialect reads ledger and Iceberg tables together.
            con = ledger_copy(ledger_reader)
            try:
                yield IcebergReader(catalog, DuckDBReader(con, self.describe(), time_limit))
            finally:
                con.close()


__all__ = ["IcebergLoadSession", "IcebergPartLoad", "IcebergReader", "IcebergWarehouse"]
