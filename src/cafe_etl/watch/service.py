"""``cafe-etl watch``: ingest branch files as they land, until told to stop.

Each poll asks every source for files that are new or changed since the ledger (or
this process) last settled them, and ingests those in one ordinary ``ingest`` run.
The warehouse is opened for that run only, so between polls an embedded DuckDB file
is free for ``report`` and the dashboard. The ledger keeps every file exactly once,
whatever the watcher's memory says; the memory only saves re-reading known files.

An outage (warehouse or landing zone unreachable) is logged and retried with
exponential backoff; a file that could not be read is retried on its own backoff.
SIGINT/SIGTERM stop the loop after the batch in hand; a second signal aborts.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from cafe_etl.analytics import operations
from cafe_etl.config import Settings
from cafe_etl.errors import CafeEtlError, ConfigError, WarehouseMissing
from cafe_etl.logs import event, file_outcomes
from cafe_etl.pipeline.results import RunSummary
from cafe_etl.sources.base import LandingFile
from cafe_etl.warehouse import open_warehouse
from cafe_etl.watch.pollers import poller

MAX_BACKOFF = 300.0  # seconds: an outage is retried at least every five minutes


@dataclass(frozen=True)
class WatchOptions:
    interval: float = 30.0  # seconds between polls
    settle: float = 2.0  # a local file unchanged this long is complete
    reconcile_every: float = 3600.0  # seconds between full listings checked against the ledger


class Watcher:
    def __init__(self, specs: Sequence[str], settings: Settings, options: WatchOptions,
                 logger: logging.Logger) -> None:
        if options.interval <= 0 or options.settle < 0 or options.reconcile_every <= 0:
            raise ConfigError("--interval and --reconcile-every must be positive, --settle not negative")
        self.settings = settings
        self.options = options
        self.log = logger
        self.pollers = [poller(spec, options.settle, settings.s3_endpoint_url) for spec in specs]
        self.known: dict[str, str] = {}  # location → the version tag last settled
        self.retry_at: dict[str, tuple[float, int]] = {}  # unreadable files: (when, attempts so far)
        self.stop_event = threading.Event()  # set by stop(), from another thread
        # Set by the signal handler: a plain attribute, because a handler that takes a
        # lock (Event.set does) deadlocks when the signal lands while this same thread
        # holds that lock, e.g. inside Event.wait before it starts waiting.
        self._signalled: str | None = None
        self.polls = 0
        self.files_ingested = 0
        self.outages = 0  # consecutive failed polls: non-zero while backing off an outage
        self.last_poll_at: float | None = None  # Unix time of the last poll that completed

    # Signals ---------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def on_signal(number: int, _frame) -> None:
            if self._signalled:
                raise KeyboardInterrupt  # a second signal: stop now
            self._signalled = signal.Signals(number).name

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    def stop(self) -> None:
        self.stop_event.set()

    def stop_requested(self) -> bool:
        """Lock-free, so a signal handler and the loop never wait on each other."""
        return self._signalled is not None or self.stop_event.is_set()

    def _pause(self, seconds: float) -> None:
        """Sleep between polls, waking within a fifth of a second of a stop."""
        deadline = time.monotonic() + seconds
        while not self.stop_requested() and (left := deadline - time.monotonic()) > 0:
            self.stop_event.wait(min(left, 0.2))

    # The loop --------------------------------------------------------------------

    def run(self) -> None:
        options = self.options
        event(self.log, "watching", sources=[p.spec for p in self.pollers], warehouse=self._warehouse_name(),
              interval=options.interval, settle=options.settle, reconcile_every=options.reconcile_every)
        next_full = 0.0
        while not self.stop_requested():
            full = time.monotonic() >= next_full
            try:
                if full:
                    self._reconcile()
                settling = self.poll_once(full)
                if full:
                    next_full = time.monotonic() + options.reconcile_every
                if self.outages:
                    event(self.log, "recovered", after_attempts=self.outages)
                self.outages = 0
                self.last_poll_at = time.time()
                delay = min(options.settle, options.interval) if settling else options.interval
            except CafeEtlError as exc:
                self.outages += 1
                delay = min(options.interval * 2 ** (self.outages - 1), MAX_BACKOFF)
                event(self.log, "outage", logging.WARNING, error=str(exc), attempt=self.outages,
                      retry_in_seconds=round(delay, 1))
            self._pause(delay)
        if self._signalled:
            event(self.log, "stopping", signal=self._signalled)
        event(self.log, "stopped", polls=self.polls, files_ingested=self.files_ingested)

    def status(self) -> dict:
        """The loop's state, for the dashboard and metrics of ``serve --watch``."""
        return {"sources": [p.spec for p in self.pollers], "polls": self.polls,
                "files_ingested": self.files_ingested, "outage": self.outages > 0,
                "last_poll_at": self.last_poll_at, "interval": self.options.interval}

    def _reconcile(self) -> None:
        """What the ledger has settled, for every location: files whose tag still matches
        are not read again. Merged with this process's own memory, which also knows the
        files it found unchanged under a new tag."""
        try:
            with open_warehouse(self.settings.warehouse).reader() as reader:
                self.known = operations.known_versions(reader) | self.known
        except WarehouseMissing:
            pass  # created by the first ingest

    def poll_once(self, full: bool = False) -> int:
        """One look at every source and one ingest of what is ready; the number of
        local files still settling."""
        self.polls += 1
        now = time.time()
        ready: dict[str, LandingFile] = {}
        settling = 0
        for p in self.pollers:
            found = p.poll(self.known, now, full=full)
            settling += found.settling
            for f in found.ready:
                when, _ = self.retry_at.get(f.location, (0.0, 0))
                if when <= time.monotonic():
                    ready.setdefault(f.location, f)
        if ready:
            self._ingest(sorted(ready.values(), key=lambda f: f.location))
        return settling

    def _ingest(self, files: list[LandingFile]) -> None:
        from cafe_etl.pipeline.run import ingest

        event(self.log, "ingesting", files=len(files), bytes=sum(f.size for f in files))
        summary = ingest([], self.settings, command="watch", files=files, stop_requested=self.stop_requested,
                         batch_done=partial(file_outcomes, self.log))
        self._settle(summary, {f.location: f for f in files})
        event(self.log, "ingested", run_id=summary.run_id, files=len(summary.files),
              rows_loaded=summary.rows_loaded, rows_rejected=summary.rows_rejected,
              seconds=round(summary.seconds, 3), stopped=summary.stopped)

    def _settle(self, summary: RunSummary, offered: dict[str, LandingFile]) -> None:
        for f in summary.files:
            if f.unreadable:
                _, attempts = self.retry_at.get(f.location, (0.0, 0))
                delay = min(self.options.interval * 2 ** attempts, MAX_BACKOFF)
                self.retry_at[f.location] = (time.monotonic() + delay, attempts + 1)
            elif f.outcome != "elsewhere":  # another loader's: look again next poll
                self.retry_at.pop(f.location, None)
                self.known[f.location] = offered[f.location].etag or ""
                self.files_ingested += f.outcome in ("loaded", "reloaded")

    def _warehouse_name(self) -> str:
        try:
            return open_warehouse(self.settings.warehouse).describe()
        except CafeEtlError:
            return "(unusable)"
