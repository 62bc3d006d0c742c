"""The Iceberg warehouse's tables: names, properties, how they are created from the
schema, and the helpers every part of it shares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import duckdb

from cafe_etl.errors import ConfigError, WarehouseError, WarehouseMissing
from cafe_etl.warehouse import schema
from cafe_etl.warehouse.base import FILE_TABLES

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


def needs_pyiceberg() -> None:
    try:
        import pyiceberg  # noqa: F401
    except ImportError:
        raise ConfigError("the Iceberg warehouse needs pyiceberg: pip install 'cafe-etl[iceberg]'") from None


# The schema of every table, as DuckDB spells it (from tables.sql, in an in-memory
# database): what the Iceberg tables are created from, and the rows seeded there.
def template() -> duckdb.DuckDBPyConnection:
    from cafe_etl.warehouse.duckdb import HOOKS

    con = duckdb.connect()
    for statement in schema.statements(HOOKS):
        con.execute(statement)
    # A customer's sales to date change with every load's facts, in the same transaction
    # on a SQL warehouse; Iceberg commits one table at a time, so it keeps only the first sale.
    for column in schema.CUSTOMER_TO_DATE:
        con.execute(f"ALTER TABLE dim_customer DROP COLUMN {column}")
    return con


@contextmanager
def storage_errors(where: str) -> Iterator[None]:
    """What the catalog's database or the file store refuse (unreachable, full, gone) is
    the warehouse's trouble, said in a sentence; the run stops and its claims wait."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (NoSuchNamespaceError, NoSuchTableError):
        raise WarehouseMissing(f"{where} holds no cafe-etl tables yet: run `cafe-etl ingest` first") from None
    except OSError as exc:
        raise WarehouseError(f"{where} cannot read or write its files: {exc}") from None
    except SQLAlchemyError as exc:
        raise WarehouseError(f"{where} cannot reach its catalog database: {type(exc).__name__}") from None


def create_tables(catalog: Any) -> None:
    """Every table of the star schema, once (another loader may create them at the same time)."""
    from pyiceberg.exceptions import CommitFailedException, TableAlreadyExistsError

    existing = {name for _, name in catalog.list_tables(NAMESPACE)}
    missing = [t for t in TABLES if t not in existing]
    if not missing:
        return
    schema_rows = template()
    try:
        for name in missing:
            rows = schema_rows.sql(f"SELECT * FROM {name}").to_arrow_table()
            # One commit: the table, its partitioning and its seed rows (dim_time,
            # dim_payment_method) together, or nothing.
            created = catalog.create_table_transaction(f"{NAMESPACE}.{name}", schema=rows.schema,
                                                       properties=TABLE_PROPERTIES)
            if name in PARTITIONED:
                with created.update_spec() as spec:
                    spec.add_identity("date_key")
            if rows.num_rows:
                created.append(rows)
            try:
                created.commit_transaction()
            except (TableAlreadyExistsError, CommitFailedException):
                continue  # another loader made it first
    finally:
        schema_rows.close()


def fit(rows: Any, table: Any) -> Any:
    """``rows`` cast to ``table``'s columns (Iceberg has no 16-bit integers, for one)."""
    return rows.select(table.schema().column_names).cast(table.schema().as_arrow())


