"""The one way the web service reads the warehouse.

Every page, API call and metrics scrape goes through ``Gateway.read``: a short-lived
read connection, a row limit per answer, a bounded wait when a loader holds an
embedded warehouse, and a small cache of answers keyed by the warehouse's data
version. When the warehouse stays busy past the wait, the last answer to the same
question is served, marked stale, rather than an error.

No request can take the service down: its time limit covers the whole answer (every
query gets what is left of it, and an answer finished late is refused), at most
``heavy_requests`` answers are computed at once (beyond that a short wait, then 503
with Retry-After), and the cache is bounded in bytes as well as in entries.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cafe_etl.analytics import jsonout
from cafe_etl.errors import Overloaded, QueryTimeout, WarehouseBusy
from cafe_etl.warehouse.base import Reader, Warehouse

T = TypeVar("T")

# What changes whenever anything is loaded, replaced, failed or run: one cheap query.
_VERSION_SQL = """SELECT (SELECT count(*) FROM etl_file), (SELECT max(processed_at) FROM etl_file),
                         (SELECT max(run_id) FROM etl_run), (SELECT max(finished_at) FROM etl_run)"""


@dataclass(frozen=True)
class Limits:
    time_limit: float = 10.0  # seconds any one answer may take, its queries included
    max_rows: int = 50_000  # rows any one query may return
    busy_wait: float = 3.0  # seconds to wait for a loader holding an embedded warehouse
    cache_entries: int = 512  # answers kept; 0 turns the cache off
    cache_bytes: int = 64 << 20  # ... and their size, as JSON
    heavy_requests: int = 4  # answers computed at once
    queue_wait: float = 2.0  # seconds a request waits for a turn before 503


@dataclass(frozen=True)
class Answer(Generic[T]):
    value: T
    stale: bool = False  # the warehouse was busy: this is the last answer given
    cached: bool = False


class LimitedReader(Reader):
    """A reader held to the row limit, whose queries share one deadline."""

    def __init__(self, inner: Reader, max_rows: int, deadline: float, time_limit: float) -> None:
        self.inner = inner
        self.max_rows = max_rows
        self.deadline = deadline
        self.time_limit = time_limit

    def query(self, sql: str, params=(), *, max_rows: int | None = None) -> list[tuple]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise QueryTimeout(f"the answer took longer than its {self.time_limit:g} s limit")
        self.inner.limit_time(left)
        return self.inner.query(sql, params, max_rows=min(max_rows or self.max_rows, self.max_rows))

    def regex_match(self, expression: str) -> str:
        return self.inner.regex_match(expression)

    @property
    def keeps_chain_pairs(self) -> bool:  # what the warehouse behind it keeps
        return self.inner.keeps_chain_pairs

    @property
    def keeps_customer_rollups(self) -> bool:
        return self.inner.keeps_customer_rollups


class Gateway:
    def __init__(self, warehouse: Warehouse, limits: Limits | None = None) -> None:
        self.warehouse = warehouse
        self.limits = limits or Limits()
        self._cache: OrderedDict[Hashable, tuple[Any, Any, int]] = OrderedDict()  # key: (version, value, bytes)
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self._turns = threading.BoundedSemaphore(self.limits.heavy_requests)

    def read(self, answer: Callable[[Reader], T], key: Hashable | None = None) -> Answer[T]:
        """``answer(reader)``, or the cached answer to the same ``key`` if the data has
        not changed since. ``key`` None: always read, never cache."""
        if not self._turns.acquire(timeout=self.limits.queue_wait):
            raise Overloaded("the service is answering as many requests as it can; try again in a moment")
        try:
            return self._read(answer, key)
        finally:
            self._turns.release()

    def _read(self, answer: Callable[[Reader], T], key: Hashable | None) -> Answer[T]:
        limits = self.limits
        deadline = time.monotonic() + limits.time_limit
        try:
            with self.warehouse.reader(time_limit=limits.time_limit, wait=limits.busy_wait) as raw:
                reader = LimitedReader(raw, limits.max_rows, deadline, limits.time_limit)
                if key is None or not limits.cache_entries:
                    return Answer(self._in_time(answer(reader), deadline))
                version = tuple(reader.query(_VERSION_SQL)[0])
                hit = self._get(key)
                if hit is not None and hit[0] == version:
                    return Answer(hit[1], cached=True)
                value = self._in_time(answer(reader), deadline)
                self._put(key, version, value)
                return Answer(value)
        except WarehouseBusy:
            hit = self._get(key) if key is not None else None
            if hit is None:
                raise
            return Answer(hit[1], stale=True, cached=True)

    def _in_time(self, value: T, deadline: float) -> T:
        """An answer finished after the deadline is refused, as a query past it would be."""
        if time.monotonic() > deadline:
            raise QueryTimeout(f"the answer took longer than its {self.limits.time_limit:g} s limit")
        return value

    def ping(self) -> float:
        """Seconds one trivial query takes; raises if the warehouse cannot be read."""
        started = time.perf_counter()
        self.read(lambda reader: reader.query("SELECT count(*) FROM etl_schema"))
        return time.perf_counter() - started

    def _get(self, key: Hashable) -> tuple[Any, Any] | None:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def _put(self, key: Hashable, version: Any, value: Any) -> None:
        size = len(jsonout.dumps(value, indent=None))
        if size > self.limits.cache_bytes // 8:  # one answer may not push out most of the others
            return
        with self._lock:
            if key in self._cache:
                self._cached_bytes -= self._cache.pop(key)[2]
            self._cache[key] = (version, value, size)
            self._cached_bytes += size
            while len(self._cache) > self.limits.cache_entries or self._cached_bytes > self.limits.cache_bytes:
                self._cached_bytes -= self._cache.popitem(last=False)[1][2]

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes
