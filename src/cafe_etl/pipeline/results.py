"""Typed results of a run: what happened to each file, and the totals.

The CLI's tables and ``--json`` output, the run record in the warehouse and (later)
metrics are all fed from these objects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cafe_etl.warehouse.base import RowCounts, RunTotals

# What a run did with a file. "loaded" and "reloaded" (a new version replacing an
# older one) put rows in the warehouse; "failed" did not; "unchanged" and "copy"
# were skipped because the warehouse already holds that content; "elsewhere" was
# left to another loader that had claimed it. "valid" is validate's verdict for a
# file that would load.
OUTCOMES = ("loaded", "reloaded", "failed", "unchanged", "copy", "elsewhere", "valid")


@dataclass
class FileOutcome(RowCounts):
    """What a run did with one file; its row counts are the ledger's (``RowCounts``)."""

    location: str
    outcome: str
    file_id: int | None = None
    format: str | None = None
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    copy_of: int | None = None
    replaced_file_id: int | None = None
    bytes: int = 0
    seconds: float = 0.0
    unreadable: bool = False  # failed because it could not be read: trying again later may succeed
    # The version's status in the ledger after the run: loaded, failed, skipped (a copy)
    # or loading (another loader has it). For "unchanged", the status it settled with earlier.
    ledger_status: str | None = None


@dataclass
class RunSummary:
    command: str
    warehouse: str
    run_id: int | None = None
    files: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False  # asked to stop: the files of batches not started were left for the next run

    def count(self, *outcomes: str) -> int:
        return sum(1 for f in self.files if f.outcome in outcomes)

    @property
    def rows_loaded(self) -> int:
        return sum(f.rows_loaded for f in self.files)

    @property
    def rows_rejected(self) -> int:
        return sum(f.rows_rejected for f in self.files)

    @property
    def bytes_read(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0

    def rejects_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            for reason, n in f.rejects_by_reason.items():
                out[reason] = out.get(reason, 0) + n
        return dict(sorted(out.items()))

    def totals(self) -> RunTotals:
        return RunTotals(
            files_seen=len(self.files),
            files_loaded=self.count("loaded", "reloaded"),
            files_failed=self.count("failed"),
            files_skipped=self.count("unchanged", "copy", "elsewhere"),
            files_replaced=self.count("reloaded"),
            rows_loaded=self.rows_loaded,
            rows_rejected=self.rows_rejected,
            bytes_read=self.bytes_read,
            seconds=self.seconds,
        )

    def to_dict(self) -> dict:
        rate = self.rows_loaded / self.seconds if self.seconds else 0.0
        return {
            "run_id": self.run_id,
            "command": self.command,
            "warehouse": self.warehouse,
            "ok": self.ok,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
            "files": {outcome: self.count(outcome) for outcome in OUTCOMES} | {"total": len(self.files)},
            "rows": {"loaded": self.rows_loaded, "rejected": self.rows_rejected},
            "rejects_by_reason": self.rejects_by_reason(),
            "transactions_per_second": round(rate, 1),
            "bytes_read": self.bytes_read,
            "file_results": [_file_result(f) for f in self.files],
        }


def _file_result(f: FileOutcome) -> dict:
    """One file's result in ``--json``: flat, where and what first."""
    return {"location": f.location, "outcome": f.outcome} | asdict(f) | {"seconds": round(f.seconds, 4)}


@dataclass
class Problem:
    """One thing ``validate`` found: a row's reason, or why a whole file fails (line None)."""

    location: str
    line: int | None
    reason: str
    detail: str
