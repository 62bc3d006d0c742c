"""The processing engine: an in-memory DuckDB that turns raw exports into staged rows.

Whatever the warehouse, every transformation runs here, set-based. Personal data
(names, card numbers) exists only inside this engine's memory while a batch is
processed: spilling to disk is switched off, so it never reaches a file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb

from cafe_etl import rules

_PLACEHOLDERS = ", ".join(f"'{p}'" for p in rules.PLACEHOLDERS)

# Reusable SQL building blocks. Values that come from rules are constants of the
# project, not user input; anything from a file is always bound as a parameter.
# is_missing: placeholders are ASCII, so a value longer in bytes than the longest one
# (and not padded) is not one; its length in bytes is known without reading it.
_MACROS = f"""
CREATE OR REPLACE TEMP MACRO is_missing(x) AS
    CASE WHEN x IS NULL THEN true
         WHEN strlen(x) <= {max(map(len, rules.PLACEHOLDERS))} THEN upper(trim(x)) IN ({_PLACEHOLDERS})
         WHEN starts_with(x, ' ') THEN upper(trim(x)) IN ({_PLACEHOLDERS})
         WHEN ends_with(x, ' ') THEN upper(trim(x)) IN ({_PLACEHOLDERS})
         ELSE false END;
CREATE OR REPLACE TEMP MACRO key_of(x) AS ('0x' || left(md5(x), 15))::BIGINT;
CREATE OR REPLACE TEMP MACRO unquote(x) AS
    CASE WHEN strlen(trim(x)) >= 2 AND starts_with(trim(x), '"') AND ends_with(trim(x), '"')
         THEN replace(substr(trim(x), 2, length(trim(x)) - 2), '""', '"') ELSE x END;
CREATE OR REPLACE TEMP MACRO csv_fields(line) AS
    list_transform(regexp_extract_all(line, '(?:^|,)("(?:[^"]|"")*"|[^,]*)', 1), lambda f: unquote(f));
CREATE OR REPLACE TEMP MACRO money_text(x) AS regexp_full_match(x, '-?[0-9]{{1,8}}(\\.[0-9]{{1,2}})?');
CREATE OR REPLACE TEMP MACRO to_money(x) AS
    CASE WHEN money_text(x) THEN x::DECIMAL(10, 2) WHEN money_text(trim(x)) THEN trim(x)::DECIMAL(10, 2) END;
CREATE OR REPLACE TEMP MACRO parse_when(x) AS
    coalesce(try_strptime(x, {rules.TIMESTAMP_FORMATS_SQL}), try_strptime(trim(x), {rules.TIMESTAMP_FORMATS_SQL}));
CREATE OR REPLACE TEMP MACRO payment_word(x) AS
    CASE WHEN x IN ('CASH', 'CARD') THEN x WHEN length(x) >= 4 THEN upper(trim(x)) END;
CREATE OR REPLACE TEMP MACRO mask_numbers(x) AS
    regexp_replace(x, '[0-9][0-9 -]{{10,}}[0-9]', '<number removed>', 'g');
-- Control characters, or U+FFFD (what a NUL or an undecodable byte became): never in a name.
CREATE OR REPLACE TEMP MACRO unprintable(x) AS regexp_matches(x, '[[:cntrl:]\\x{{FFFD}}]');
CREATE OR REPLACE TEMP MACRO printable(x) AS
    CASE WHEN regexp_matches(x, '[[:cntrl:]]') THEN regexp_replace(x, '[[:cntrl:]]', '?', 'g') ELSE x END;
CREATE OR REPLACE TEMP MACRO clip(x, n) AS
    CASE WHEN length(x) > n THEN left(x, n - 1) || '…' ELSE x END;
CREATE OR REPLACE TEMP MACRO quote_field(x) AS
    CASE WHEN contains(x, ',') AND NOT starts_with(x, '"') THEN '"' || x || '"' ELSE x END;
CREATE OR REPLACE TEMP MACRO keep_if_plain(x) AS
    CASE WHEN x IS NULL THEN ''
         WHEN regexp_full_match(trim(x), '[0-9/:. -]{{0,25}}') OR upper(trim(x)) IN ('CASH', 'CARD')
              OR regexp_matches(x, ' - [0-9.-]+\\s*"?\\s*$')
         THEN mask_numbers(x) ELSE '<removed>' END;
CREATE OR REPLACE TEMP MACRO collapse(x) AS
    CASE WHEN contains(x, '  ') OR contains(x, chr(9)) THEN regexp_replace(trim(x), '\\s+', ' ', 'g')
         WHEN starts_with(x, ' ') OR ends_with(x, ' ') THEN trim(x)
         ELSE x END;
"""


class Engine:
    """One connection of the engine database, with the pipeline's macros loaded.

    Temp tables and macros belong to the connection, so engines of one pool work on
    different batches at the same time without seeing each other's rows.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.con.execute("SET enable_progress_bar = false").fetchall()
        self.con.execute(_MACROS).fetchall()

    def run(self, sql: str, params: dict[str, Any] | Sequence[Any] | None = None) -> None:
        self.con.execute(sql, params).fetchall()

    def rows(self, sql: str, params: dict[str, Any] | Sequence[Any] | None = None) -> list[tuple]:
        return self.con.execute(sql, params).fetchall()

    def reset(self, keep: str | None = None) -> None:
        """Drop the batch's staged tables, so their memory is free before the next batch;
        those whose name starts with ``keep`` stay."""
        names = self.rows("SELECT table_name, table_type FROM information_schema.tables WHERE table_catalog = 'temp'")
        for name, kind in names:
            if keep and name.startswith(keep):
                continue
            self.run(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} IF EXISTS temp.main.{name}")


class MemoryGate:
    """The engines share one memory limit, so one batch can run out of memory because
    of another's. Every batch in hand holds a place; a batch that ran out of memory is
    retried alone: it waits until the other engines' batches are done, and no new batch
    starts until it has finished."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._working = 0
        self._waiting_alone = 0
        self._alone = False

    @contextmanager
    def sharing(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._alone and not self._waiting_alone)
            self._working += 1
        try:
            yield
        finally:
            with self._cond:
                self._working -= 1
                self._cond.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        """For a batch in hand (inside ``sharing``): the rest of its work, by itself."""
        with self._cond:
            self._working -= 1
            self._waiting_alone += 1
            self._cond.wait_for(lambda: not self._alone and not self._working)
            self._waiting_alone -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._working += 1
                self._cond.notify_all()


class EnginePool:
    """The engine database and ``workers`` connections to it, one per concurrent batch.

    ``threads`` is each engine's share of the cores while all of them have a batch."""

    def __init__(self, *, workers: int, threads: int, memory_limit: str) -> None:
        self._all_threads = threads * max(1, workers)
        self.db = duckdb.connect(
            ":memory:",
            config={
                "threads": threads,
                "memory_limit": memory_limit,
                "temp_directory": "",  # never spill: staged rows may hold personal data
                "preserve_insertion_order": False,
            },
        )
        self.engines = [Engine(self.db.cursor()) for _ in range(max(1, workers))]
        self.memory = MemoryGate()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.db.cursor()

    def lend_idle_cores(self) -> None:
        """No batch is left for an idle engine: the engines still working share every core
        (the threads setting is the database's; it applies from their next statement)."""
        with self.db.cursor() as con:
            con.execute(f"SET threads = {self._all_threads}").fetchall()

    def close(self) -> None:
        for engine in self.engines:
            engine.con.close()
        self.db.close()

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def temp_table(con: duckdb.DuckDBPyConnection, name: str, columns: Sequence[tuple[str, str]],
               rows: Sequence[Sequence[Any]]) -> None:
    """(Re)create temp table ``name`` from Python rows in one statement: one list parameter
    per column, unnested side by side (row-by-row inserts cost milliseconds each)."""
    values = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in columns]
    select = ", ".join(f"unnest(?::{sql_type}[]) AS {column}" for column, sql_type in columns)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {select}", values).fetchall()
