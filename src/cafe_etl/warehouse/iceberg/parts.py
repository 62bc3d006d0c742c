"""A file too large for one batch, loaded into the Iceberg warehouse slice by slice."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

import duckdb

from cafe_etl.engine import Engine
from cafe_etl.rules import FileStatus
from cafe_etl.warehouse.base import FileRecord, PartLoad
from cafe_etl.warehouse.customer_sql import CUSTOMER_INPUT, NO_KEY
from cafe_etl.warehouse.iceberg.tables import storage_errors
from cafe_etl.warehouse.load_sql import _AGGREGATES, _FACTS, DIMENSION_INPUTS, _select

if TYPE_CHECKING:
    from cafe_etl.warehouse.iceberg.loading import IcebergLoadSession


class IcebergPartLoad(PartLoad):
    """A file too large for one batch, loaded slice by slice and committed once, as a
    batch of one file: one commit per table. Until then each slice's facts wait as
    Parquet in a private folder (they hold no personal data) and its aggregates are
    added up in a DuckDB of its own: a file's sales are disjoint between slices, so
    counts of sales, items and money add up; its distinct customers per day and branch
    are counted at the end from the customer keys kept; its customers' first sales are
    the earliest of every slice's."""

    _ADDED = {  # how each per-file aggregate's slices add up: (its keys, its sums)
        "agg_product_day": ("file_id, date_key, branch_key, product_key",
                            "CAST(sum(quantity) AS INTEGER) AS quantity, sum(revenue) AS revenue, "
                            "CAST(sum(sales) AS INTEGER) AS sales"),
        "agg_pair_day": ("file_id, date_key, branch_key, a_key, b_key", "CAST(sum(sales) AS INTEGER) AS sales"),
        "agg_sale_hour": ("file_id, date_key, branch_key, hour",
                          "CAST(sum(transactions) AS INTEGER) AS transactions, CAST(sum(items) AS INTEGER) AS items, "
                          "sum(revenue) AS revenue"),
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
        for table in self._ADDED:
            relation = _AGGREGATES[table][1]
            self._keep(table, engine.con.sql(f"SELECT * FROM {relation}").to_arrow_table())
        self._keep("seen_customer", engine.con.sql(
            "SELECT DISTINCT file_id, date_key, branch_key, customer_key FROM out_sale "
            "WHERE customer_key IS NOT NULL").to_arrow_table())
        self._keep("first_sale", engine.con.sql(CUSTOMER_INPUT).to_arrow_table())

    def _keep(self, name: str, rows: Any) -> None:
        self.work.register("slice_rows", rows)
        if self._has(name):
            self.work.execute(f"INSERT INTO {name} SELECT * FROM slice_rows").fetchall()
        else:
            self.work.execute(f"CREATE TABLE {name} AS SELECT * FROM slice_rows").fetchall()
        self.work.unregister("slice_rows")

    def finish(self, record: FileRecord) -> None:
        with storage_errors(self.session.describe()):
            self._finish(record)

    def _finish(self, record: FileRecord) -> None:
        import pyarrow.parquet as pq

        session = self.session
        rows: dict[str, Any] = {table: self._summed(table, keys, sums) for table, (keys, sums) in self._ADDED.items()}
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
        # Facts a slice at a time (read when appended: memory stays one slice's).
        chunks = {table: lambda paths=paths: (pq.read_table(path) for path in paths)
                  for table, paths in self.parts.items()}
        chunks |= {table: lambda kept=kept: [kept] for table, kept in rows.items()}
        with session._writing:
            session.commit_files([self.file_id], replaced, chunks, firsts)
        with session.ledger._part_connection() as con:
            session._write_ledger(con, [record], self.run_id)

    def _summed(self, table: str, keys: str, sums: str) -> Any:
        if not self._has(table):
            return None
        return self._table(f"SELECT {keys}, {sums} FROM {table} GROUP BY {keys}")

    def _has(self, name: str) -> bool:
        return bool(self.work.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?",
                                      [name]).fetchall()[0][0])

    def _table(self, sql: str) -> Any:
        return self.work.sql(sql).to_arrow_table()

    def close(self) -> None:
        self.work.close()
        shutil.rmtree(self.folder, ignore_errors=True)
