"""Reads of the Iceberg warehouse: the ledger's DuckDB reader, with each Iceberg table a
query names put in front of it as an Arrow dataset over the current snapshot."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import duckdb

from cafe_etl.warehouse.base import Reader
from cafe_etl.warehouse.iceberg.tables import CATALOG, NAMESPACE, TABLES, storage_errors, template

LEDGER_TABLES = ("etl_schema", "etl_file", "etl_run")


def ledger_copy(ledger: Reader) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the whole schema, holding the ledger's rows read from ``ledger``."""
    con = template()
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


_NAMES = re.compile(r"\b(" + "|".join(TABLES) + r")\b")


class IcebergReader(Reader):
    """The ledger's reader, with each Iceberg table a query names put in front of its
    (empty) namesake as Arrow, read once per reader."""

    # The lake holds per-file tables only: a table summed over files would need every
    # load's commits in one transaction, which Iceberg keeps per table.
    keeps_chain_pairs = False
    keeps_customer_rollups = False  # a customer's rollups change with every load's facts

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
        with storage_errors(f"the Iceberg catalog {CATALOG}"):
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

