"""The warehouse schema, written once for every SQL backend, and how it is put in place.

``schema/tables.sql`` holds the tables in types both dialects read; where they differ
(compression, which keys an index keeps unique, secondary indexes) it names a hook in
braces, ``{compression rle}``, that each dialect spells (``Hooks``). ``marts.sql`` (the
views) and ``upgrade.sql`` (the data changes of each schema version) are portable as
they stand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from cafe_etl.errors import WarehouseError, WarehouseOutdated

# 2: per-file aggregates, dim_customer.first_branch_key; 3: first sales exact; 4: product categories;
# 5: the chain's pairs per day; 6: each customer's sales to date
SCHEMA_VERSION = 6
CUSTOMER_TO_DATE = ("last_seen", "sales", "revenue")  # dim_customer's sales to date (tables.sql)

_HOOK = re.compile(r"\{(\w+)(?: ([^}]*))?\}")


@dataclass(frozen=True)
class Hooks:
    """How one dialect spells the hooks of ``tables.sql``."""

    compression: Callable[[str], str]  # the method's name -> the column clause
    unique_key: str  # the clause of a key that must stay unique
    index: Callable[[str], str]  # "name ON table (...)" -> a statement, or "" for none
    unique_index: Callable[[str], str] = lambda _: ""  # the same, for an index that keeps keys unique

    def spell(self, statement: str) -> str:
        def one(match: re.Match) -> str:
            name, argument = match.group(1), match.group(2) or ""
            if name == "unique_key":
                return self.unique_key
            if name in ("compression", "index", "unique_index"):
                return getattr(self, name)(argument)
            raise ValueError(f"unknown schema hook {{{name}}}")

        return _HOOK.sub(one, statement)


def split_statements(script: str) -> Iterator[str]:
    """The statements of a schema file: separated by ';' at the end of a line."""
    for chunk in script.split(";\n"):
        lines = [line for line in chunk.splitlines() if not line.strip().startswith("--")]
        statement = "\n".join(lines).strip().rstrip(";")
        if statement:
            yield statement


def _script(name: str) -> str:
    return (resources.files("cafe_etl.warehouse") / "schema" / name).read_text()


def statements(hooks: Hooks) -> list[str]:
    """Every statement that creates (or completes) the schema, in the dialect's words."""
    spelled = [hooks.spell(s) for s in split_statements(_script("tables.sql"))]
    return [s for s in spelled if s] + list(split_statements(_script("marts.sql")))


def ensure(execute: Callable[[str, Sequence[Any]], list[tuple]], hooks: Hooks, lock: str | None = None) -> None:
    """Create or upgrade the schema in one transaction, unless it is at this version.

    ``execute`` runs one statement with ``?`` parameters; ``lock``, if given, is run
    first inside the transaction, so that two processes never create it at once.
    """
    execute("BEGIN", ())
    try:
        if lock:
            execute(lock, ())
        versions = _versions(execute)
        if versions and max(versions) > SCHEMA_VERSION:
            # A newer cafe-etl keeps tables this one does not (the chain's pairs per day,
            # schema 5): its loads would leave them out of step.
            raise WarehouseError(
                f"the warehouse was upgraded by a newer cafe-etl (schema {max(versions)}; this one writes "
                f"{SCHEMA_VERSION}): load it with the newer version")
        if SCHEMA_VERSION not in versions:
            for statement in statements(hooks):
                execute(statement, ())
            for statement in split_statements(_script("upgrade.sql")):
                _upgrade(execute, statement)
            execute("INSERT INTO etl_schema VALUES (?, ?)", (SCHEMA_VERSION, datetime.now()))
        execute("COMMIT", ())
    except BaseException:
        with suppress(Exception):  # the first error is the one to report
            execute("ROLLBACK", ())
        raise


UPGRADE_FILES_AT_ONCE = 256  # file ids per run of a ranged upgrade statement


def _upgrade(execute: Callable[[str, Sequence[Any]], list[tuple]], statement: str) -> None:
    """Run one upgrade statement; one with ``file_id BETWEEN ? AND ?`` (each ``?`` pair
    a range) once per range of the ledger's file ids, so its joins stay small."""
    if "?" not in statement:
        execute(statement, ())
        return
    low, high = execute("SELECT min(file_id), max(file_id) FROM etl_file", ())[0]
    if low is None:
        return
    for first in range(int(low), int(high) + 1, UPGRADE_FILES_AT_ONCE):
        execute(statement, [first, first + UPGRADE_FILES_AT_ONCE - 1] * (statement.count("?") // 2))


def _versions(execute: Callable[[str, Sequence[Any]], list[tuple]]) -> list[int]:
    """The schema versions the warehouse has been at (none: it has no schema yet)."""
    exists = execute("SELECT count(*) FROM information_schema.tables "
                     "WHERE table_name = 'etl_schema' AND table_schema = current_schema() "
                     "AND table_catalog = current_database()", ())
    if not exists[0][0]:
        return []
    return [int(version) for (version,) in execute("SELECT version FROM etl_schema", ())]


def check_readable(version: int | None, where: str) -> None:
    """Readers cannot upgrade a warehouse (they are read-only): an older one is refused
    with the one step that upgrades it."""
    if version is None or version < SCHEMA_VERSION:
        raise WarehouseOutdated(
            f"the warehouse {where} was written by an older cafe-etl (schema {version or 'unknown'}, this one reads "
            f"{SCHEMA_VERSION}): run `cafe-etl ingest` on any source, even an empty folder, to upgrade it")
