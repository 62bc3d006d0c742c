"""Warehouses behind one interface, chosen by URL (DESIGN §6).

``duckdb:///relative/file.duckdb`` or ``duckdb:////absolute/file.duckdb`` (the
SQLAlchemy convention: what follows the third slash is the path), or a bare path,
opens the embedded DuckDB file. ``postgresql://user@host:port/database`` opens a
PostgreSQL warehouse (so does a libpq ``key=value`` connection string); what the URL
leaves out comes from the standard ``PG*``
variables and ``~/.pgpass``, so a password need never be written on a command line.
``iceberg:///path/to/folder`` and ``iceberg+postgresql://…?warehouse=s3://bucket/prefix``
open an Apache Iceberg warehouse (``warehouse/iceberg/``).
"""

from __future__ import annotations

import re

from cafe_etl.errors import ConfigError
from cafe_etl.warehouse.base import Warehouse

# A libpq connection string (``host=db dbname=sales user=etl``) names a PostgreSQL
# warehouse too, never a file of that name.
_CONNINFO = re.compile(r"^\s*(host|hostaddr|port|dbname|user|password|service|sslmode)\s*=", re.I)


def open_warehouse(url: str, *, lock_wait: float | None = None) -> Warehouse:
    """The warehouse ``url`` names. ``lock_wait``: seconds a loader waits for an embedded
    file that another process holds (the default otherwise)."""
    from cafe_etl.warehouse.duckdb import DuckDBWarehouse

    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") or (not sep and _CONNINFO.match(url)):
        from cafe_etl.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(url)
    if not sep:
        if not url.strip():
            raise ConfigError("the warehouse URL is empty")
        return DuckDBWarehouse(url, lock_wait)
    if scheme in ("iceberg", "iceberg+postgresql", "iceberg+postgres"):
        from cafe_etl.warehouse.iceberg import IcebergWarehouse

        return IcebergWarehouse(url, lock_wait=lock_wait)
    if scheme == "duckdb":
        path = rest[1:] if rest.startswith("/") else ""
        if not path or path == ":memory:":
            raise ConfigError(f"a DuckDB warehouse URL is duckdb:///path/to/file.duckdb, not {url!r}")
        return DuckDBWarehouse(path, lock_wait)
    raise ConfigError(f"unknown warehouse {url!r}: use duckdb:///path/file.duckdb, a file path, "
                      "postgresql://user@host:port/database, iceberg:///path/to/folder "
                      "or iceberg+postgresql://user@host:port/database?warehouse=s3://bucket/prefix")


__all__ = ["Warehouse", "open_warehouse"]
