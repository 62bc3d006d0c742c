"""The ledger's side of a load session, written once for every SQL warehouse.

Runs, claims, copies, take-overs and load times are the same statements on DuckDB and
on PostgreSQL. A backend supplies only its dialect: how a statement runs with ``?``
parameters (``_run``), and what differs in its locking (``ledger_transaction``,
``lookup``, and what a run holds while it lives, ``_hold_run``). Lists travel as
array parameters unnested side by side, which both dialects read the same way.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cafe_etl import __version__
from cafe_etl.rules import FileStatus, RunStatus
from cafe_etl.warehouse.base import FileRecord, LoadSession, NewFile, RunTotals, record_columns, record_values

_NEW_FILES = f"""
INSERT INTO etl_file (file_id, location, content_sha256, size_bytes, etag, status, copy_of, error,
                      run_id, discovered_at, claimed_at, processed_at)
SELECT nextval('etl_file_id_seq'), location, sha256, size, etag, status, copy_of, error, ?, ?, ?,
       CASE WHEN status = '{FileStatus.LOADING}' THEN NULL ELSE CAST(? AS TIMESTAMP) END
FROM (SELECT * FROM (SELECT unnest(CAST(? AS BIGINT[])) AS n, unnest(CAST(? AS VARCHAR[])) AS location,
                           unnest(CAST(? AS VARCHAR[])) AS sha256, unnest(CAST(? AS BIGINT[])) AS size,
                           unnest(CAST(? AS VARCHAR[])) AS etag, unnest(CAST(? AS VARCHAR[])) AS status,
                           unnest(CAST(? AS BIGINT[])) AS copy_of, unnest(CAST(? AS VARCHAR[])) AS error) u
      ORDER BY n) f
RETURNING file_id, location
"""

_FINISH_RUN = """
UPDATE etl_run SET finished_at = ?, status = ?, files_seen = ?, files_loaded = ?, files_failed = ?,
    files_skipped = ?, files_replaced = ?, rows_loaded = ?, rows_rejected = ?, bytes_read = ?, seconds = ?, error = ?
WHERE run_id = ?
"""

_LOAD_SECONDS = """
UPDATE etl_file SET seconds_load = t.seconds
FROM (SELECT unnest(CAST(? AS BIGINT[])) AS file_id, unnest(CAST(? AS DOUBLE PRECISION[])) AS seconds) t
WHERE etl_file.file_id = t.file_id
"""


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


def record_statements(records: Sequence[FileRecord], run_id: int) -> list[tuple[str, list]]:
    """The statements (and their parameters) that write ``records`` into the ledger, run
    in the transaction of the rows they describe."""
    rows = [record_values(r) for r in records]
    now = datetime.now()
    return [("DROP TABLE IF EXISTS load_record", []),
            (_STAGE_RECORDS, [list(column) for column in zip(*rows, strict=True)]),
            (_MARK_REPLACED, [now]), (_WRITE_RECORDS, [run_id, now])]


class SqlLedger(LoadSession):
    """Runs and the ledger, shared by the SQL backends' load sessions."""

    @abstractmethod
    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement with ``?`` parameters on the session's own connection."""

    def _hold_run(self, run_id: int) -> None:  # noqa: B027 - a hook: most warehouses need nothing here
        """What a run holds while it lives, so that others can tell its claims are alive."""

    def start_run(self, command: str) -> int:
        (run_id,) = self._run("SELECT nextval('etl_run_id_seq')")[0]
        self._hold_run(run_id)
        self._run("INSERT INTO etl_run (run_id, command, started_at, status, version) VALUES (?, ?, ?, ?, ?)",
                  [run_id, command, datetime.now(), RunStatus.RUNNING, __version__])
        return run_id

    def finish_run(self, run_id: int, totals: RunTotals, status: RunStatus, error: str | None = None) -> None:
        self._run(_FINISH_RUN, [datetime.now(), status, totals.files_seen, totals.files_loaded, totals.files_failed,
                                totals.files_skipped, totals.files_replaced, totals.rows_loaded, totals.rows_rejected,
                                totals.bytes_read, totals.seconds, error, run_id])

    def claim(self, files: Sequence[NewFile], run_id: int) -> list[int]:
        return self._insert_files([(f.location, f.sha256, f.size, f.etag, FileStatus.LOADING, None, None)
                                   for f in files], run_id)

    def record_copies(self, copies: Sequence[tuple[NewFile, int]], run_id: int) -> None:
        self._insert_files(
            [(f.location, f.sha256, f.size, f.etag, FileStatus.SKIPPED, original, f"same content as file {original}")
             for f, original in copies],
            run_id,
        )

    def take_over(self, file_ids: Sequence[int], run_id: int) -> None:
        if file_ids:
            self._run("UPDATE etl_file SET run_id = ?, claimed_at = ? WHERE file_id = ANY(CAST(? AS BIGINT[]))",
                      [run_id, datetime.now(), list(file_ids)])

    def record_load_seconds(self, seconds: Sequence[tuple[int, float]]) -> None:
        if seconds:
            self._run(_LOAD_SECONDS, [[f for f, _ in seconds], [s for _, s in seconds]])

    def _insert_files(self, rows: Sequence[tuple], run_id: int) -> list[int]:
        """New ledger rows in one statement; their ids, in the order given."""
        if not rows:
            return []
        now = datetime.now()
        columns = [list(column) for column in zip(*rows, strict=True)]
        columns[4] = [str(status) for status in columns[4]]
        found = self._run(_NEW_FILES, [run_id, now, now, now, list(range(len(rows))), *columns])
        by_location = {location: file_id for file_id, location in found}
        return [by_location[row[0]] for row in rows]
