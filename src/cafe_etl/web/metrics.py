"""``/metrics``: the pipeline's state in Prometheus format.

The figures come from the ledger (``etl_file``, ``etl_run``, ``etl_reject``), so
they count every loader that writes to the warehouse (``ingest``, ``watch``, cloud
functions), not only this process, and survive restarts. Counters only grow while
the ledger keeps its history; rejected rows of a replaced file leave the quarantine
with it, so those are a gauge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from datetime import time as clock

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from cafe_etl import __version__
from cafe_etl.analytics import operations, trends
from cafe_etl.errors import CafeEtlError
from cafe_etl.rules import FileStatus, RunStatus
from cafe_etl.web.gateway import Gateway

# Whole runs, from a single late file to a month's backlog.
RUN_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def _epoch(moment: datetime | None) -> float | None:
    """Ledger times are the loader's local wall-clock time."""
    return moment.timestamp() if moment else None


def _day_epoch(day) -> float:
    return datetime.combine(day, clock(0), tzinfo=UTC).timestamp()


def ledger_figures(reader) -> dict:
    state = operations.ledger_state(reader)
    rows_loaded, rows_rejected = reader.query(
        """SELECT coalesce(sum(rows_loaded), 0), coalesce(sum(rows_rejected), 0)
           FROM etl_file WHERE status IN (?, ?)""", [FileStatus.LOADED, FileStatus.REPLACED])[0]
    bucket_sql = ", ".join(f"sum(CASE WHEN seconds <= {b} THEN 1 ELSE 0 END)" for b in RUN_BUCKETS)
    runs = reader.query(f"SELECT count(*), coalesce(sum(seconds), 0), {bucket_sql} FROM etl_run "
                        "WHERE finished_at IS NOT NULL AND seconds IS NOT NULL")[0]
    return {
        "files": state.files,
        "rows_loaded": int(rows_loaded),
        "rows_rejected": int(rows_rejected),
        "quarantined": state.rejects,
        "runs": (int(runs[0]), float(runs[1]), [int(v or 0) for v in runs[2:]]),
        "last_success": state.last_success,
        "branch_days": reader.query(
            """SELECT b.name, max(f.business_date) FROM etl_file f JOIN dim_branch b ON b.branch_id = f.branch_id
               WHERE f.status = ? GROUP BY b.name""", [FileStatus.LOADED]),
        "running": int(reader.scalar("SELECT count(*) FROM etl_run WHERE status = ?", [RunStatus.RUNNING]) or 0),
    }


def suspect_days(reader) -> dict[str, int]:
    """The last 7 days with sales: branch-days out of the ordinary (DESIGN §11's
    anomalies), counted by kind; short and missing days point at the till export."""
    week = trends.resolve(reader, None, None)
    counts = dict.fromkeys(trends.ANOMALY_KINDS, 0)
    for found in trends.anomalies(reader, week) if week else []:
        counts[found["kind"]] += 1
    return counts


class LedgerCollector:
    def __init__(self, gateway: Gateway, started_at: float, watch_status: Callable[[], dict | None]) -> None:
        self.gateway = gateway
        self.started_at = started_at
        self.watch_status = watch_status

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("cafe_etl_build_info", "The running version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily("cafe_etl_uptime_seconds", "Seconds since this service started",
                                value=time.time() - self.started_at)
        try:
            figures = self.gateway.read(ledger_figures, key=("metrics",)).value
            up = 1
        except CafeEtlError:
            figures, up = None, 0
        yield GaugeMetricFamily("cafe_etl_warehouse_up", "1 when the warehouse could be read for this scrape",
                                value=up)
        if figures:
            yield from self._ledger(figures)
            yield from self._suspect_days()
        watch = self.watch_status()
        if watch:
            yield CounterMetricFamily("cafe_etl_watch_polls", "Polls of the landing zone by this service",
                                      value=watch["polls"])
            yield GaugeMetricFamily("cafe_etl_watch_outage", "1 while the watcher is backing off an outage",
                                    value=1 if watch["outage"] else 0)

    def _suspect_days(self) -> Iterator[Metric]:
        try:
            counts = self.gateway.read(suspect_days, key=("metrics", "suspect-days")).value
        except CafeEtlError:
            return
        days = GaugeMetricFamily(
            "cafe_etl_suspect_branch_days",
            "Branch-days of the last 7 days with sales outside their expected revenue, by kind "
            "(short and missing: likely a partial or lost till export)", labels=["kind"])
        for kind, count in counts.items():
            days.add_metric([kind], count)
        yield days

    @staticmethod
    def _ledger(figures: dict) -> Iterator[Metric]:
        files = figures["files"]
        processed = CounterMetricFamily("cafe_etl_files_processed", "Branch files settled by the ledger, by outcome",
                                        labels=["outcome"])
        processed.add_metric(["loaded"], files.get(FileStatus.LOADED, 0) + files.get(FileStatus.REPLACED, 0))
        processed.add_metric(["failed"], files.get(FileStatus.FAILED, 0))
        processed.add_metric(["skipped"], files.get(FileStatus.SKIPPED, 0))
        yield processed
        yield GaugeMetricFamily("cafe_etl_files_pending", "Files claimed by a loader and not yet settled",
                                value=files.get(FileStatus.LOADING, 0))
        yield GaugeMetricFamily("cafe_etl_runs_in_progress", "Ingest runs started and not finished",
                                value=figures["running"])
        yield CounterMetricFamily("cafe_etl_rows_loaded", "Transactions loaded", value=figures["rows_loaded"])
        yield CounterMetricFamily("cafe_etl_rows_rejected", "Rows quarantined by loads",
                                  value=figures["rows_rejected"])
        quarantined = GaugeMetricFamily("cafe_etl_quarantined_rows", "Rows in quarantine now, by reason code",
                                        labels=["reason"])
        for reason, count in sorted(figures["quarantined"].items()):
            quarantined.add_metric([reason], count)
        yield quarantined
        count, total, cumulative = figures["runs"]
        histogram = HistogramMetricFamily("cafe_etl_ingest_duration_seconds", "Wall time of finished ingest runs")
        histogram.add_metric([], [(str(b), c) for b, c in zip(RUN_BUCKETS, cumulative, strict=True)]
                             + [("+Inf", count)], sum_value=total)
        yield histogram
        last = _epoch(figures["last_success"])
        if last is not None:
            yield GaugeMetricFamily("cafe_etl_last_success_timestamp_seconds",
                                    "When a file was last loaded (Unix time)", value=last)
        branch_days = GaugeMetricFamily(
            "cafe_etl_branch_last_business_day_timestamp_seconds",
            "Per branch, the newest business day with a loaded file (midnight UTC, Unix time)", labels=["branch"])
        for branch, day in sorted(figures["branch_days"]):
            if day is not None:
                branch_days.add_metric([branch], _day_epoch(day))
        yield branch_days


def registry(gateway: Gateway, started_at: float, watch_status: Callable[[], dict | None]) -> CollectorRegistry:
    """A registry of this service's own (not the process-global default one)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(LedgerCollector(gateway, started_at, watch_status))
    return registry
