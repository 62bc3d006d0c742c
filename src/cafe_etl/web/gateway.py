"""The one way the web service reads the warehouse.

Every page, API call and metrics scrape goes through ``Gateway.read``: a short-lived
read connection with a time limit per query and a row limit per answer, a bounded
wait when a loader holds an embedded warehouse, and a small cache of answers keyed
by the warehouse's data version. When the warehouse stays busy past the wait, the
last answer to the same question is served, marked stale, rather than an error.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cafe_etl.errors import WarehouseBusy
from cafe_etl.warehouse.base import Reader, Warehouse

T = TypeVar("T")

# What changes whenever anything is loaded, replaced, failed or run: one cheap query.
_VERSION_SQL = """SELECT (SELECT count(*) FROM etl_file), (SELECT max(processed_at) FROM etl_file),
                         (SELECT max(run_id) FROM etl_run), (SELECT max(finished_at) FROM etl_run)"""


@dataclass(frozen=True)
class Limits:
    time_limit: float = 10.0  # seconds any one query may run
    max_rows: int = 50_000  # rows any one query may return
    busy_wait: float = 3.0  # seconds to wait for a loader holding an embedded warehouse
    cache_entries: int = 512  # answers kept; 0 turns the cache off


@dataclass(frozen=True)
class Answer(Generic[T]):
    value: T
    stale: bool = False  # the warehouse was busy: this is the last answer given
    cached: bool = False


class LimitedReader(Reader):
    """A reader whose every query is held to the row limit."""

    def __init__(self, inner: Reader, max_rows: int) -> None:
        self.inner = inner
        self.max_rows = max_rows

    def query(self, sql: str, params=(), *, max_rows: int | None = None) -> list[tuple]:
        return self.inner.query(sql, params, max_rows=min(max_rows or self.max_rows, self.max_rows))

    def regex_match(self, expression: str) -> str:
        return self.inner.regex_match(expression)


class Gateway:
    def __init__(self, warehouse: Warehouse, limits: Limits | None = None) -> None:
        self.warehouse = warehouse
        self.limits = limits or Limits()
        self._cache: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, answer: Callable[[Reader], T], key: Hashable | None = None) -> Answer[T]:
        """``answer(reader)``, or the cached answer to the same ``key`` if the data has
        not changed since. ``key`` None: always read, never cache."""
        limits = self.limits
        try:
            with self.warehouse.reader(time_limit=limits.time_limit, wait=limits.busy_wait) as raw:
                reader = LimitedReader(raw, limits.max_rows)
                if key is None or not limits.cache_entries:
                    return Answer(answer(reader))
                version = tuple(reader.query(_VERSION_SQL)[0])
                hit = self._get(key)
                if hit is not None and hit[0] == version:
                    return Answer(hit[1], cached=True)
                value = answer(reader)
                self._put(key, version, value)
                return Answer(value)
        except WarehouseBusy:
            hit = self._get(key) if key is not None else None
            if hit is None:
                raise
            return Answer(hit[1], stale=True, cached=True)

    def ping(self) -> float:
        """Seconds one trivial query takes; raises if the warehouse cannot be read."""
        started = time.perf_counter()
        with self.warehouse.reader(time_limit=self.limits.time_limit, wait=self.limits.busy_wait) as reader:
            reader.query("SELECT count(*) FROM etl_schema")
        return time.perf_counter() - started

    def _get(self, key: Hashable) -> tuple[Any, Any] | None:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def _put(self, key: Hashable, version: Any, value: Any) -> None:
        with self._lock:
            self._cache[key] = (version, value)
            self._cache.move_to_end(key)
            while len(self._cache) > self.limits.cache_entries:
                self._cache.popitem(last=False)
