"""Operations: the ledger's state, runs, rejects and missing uploads (DESIGN §4, §9)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from cafe_etl.analytics.report import from_key
from cafe_etl.rules import FileStatus
from cafe_etl.warehouse.base import Reader

_NAME_DATE = re.compile(r"(\d{2})-(\d{2})-(\d{4})")


@dataclass(frozen=True)
class LedgerState:
    """The ledger at a glance: what `status`, `/metrics`, the report's quality section
    and the operations API all show, read in one place."""

    files: dict[str, int]  # file versions by status
    rejects: dict[str, int]  # quarantined rows by reason code
    last_success: datetime | None  # when a file was last loaded

    def count(self, status: FileStatus) -> int:
        return self.files.get(status, 0)


def ledger_state(reader: Reader) -> LedgerState:
    return LedgerState(files_by_status(reader), rejects_by_reason(reader), last_success(reader))


def files_by_status(reader: Reader) -> dict[str, int]:
    return dict(reader.query("SELECT status, count(*) FROM etl_file GROUP BY status ORDER BY status"))


def rejects_by_reason(reader: Reader) -> dict[str, int]:
    return dict(reader.query("SELECT reason_code, count(*) FROM etl_reject GROUP BY reason_code ORDER BY 1"))


def last_run(reader: Reader) -> dict | None:
    rows = reader.query(
        """SELECT run_id, command, started_at, finished_at, status, files_seen, files_loaded, files_failed,
                  files_skipped, rows_loaded, rows_rejected, seconds
           FROM etl_run ORDER BY run_id DESC LIMIT 1"""
    )
    if not rows:
        return None
    keys = ("run_id", "command", "started_at", "finished_at", "status", "files_seen", "files_loaded", "files_failed",
            "files_skipped", "rows_loaded", "rows_rejected", "seconds")
    run = dict(zip(keys, rows[0], strict=True))
    run["rows_per_second"] = round(run["rows_loaded"] / run["seconds"], 1) if run["seconds"] else None
    return run


def known_versions(reader: Reader) -> dict[str, str]:
    """Each location's version tag (ETag) as the ledger last settled it (loaded, failed
    or skipped). A file whose tag is unchanged need not be read again."""
    rows = reader.query(
        """SELECT location, etag FROM etl_file
           WHERE file_id IN (SELECT max(file_id) FROM etl_file
                             WHERE status IN (?, ?, ?) AND content_sha256 <> ''
                             GROUP BY location)
             AND etag IS NOT NULL""", FileStatus.done())
    return dict(rows)


def last_success(reader: Reader) -> datetime | None:
    return reader.scalar("SELECT max(processed_at) FROM etl_file WHERE status = ?", [FileStatus.LOADED])


def warehouse_counts(reader: Reader) -> dict:
    # From the per-file aggregates (exact, and far smaller than the facts).
    sales, low, high = reader.query(
        "SELECT coalesce(sum(transactions), 0), min(date_key), max(date_key) FROM agg_sale_hour")[0]
    first, last = (from_key(low), from_key(high)) if low else (None, None)
    items = reader.scalar("SELECT coalesce(sum(quantity), 0) FROM agg_product_day")
    branches = reader.scalar("SELECT count(*) FROM dim_branch")
    return {"sales": sales, "items": items, "branches": branches,
            "first_sale": first.isoformat() if first else None, "last_sale": last.isoformat() if last else None}


@dataclass(frozen=True)
class Missing:
    branch: str
    day: date


def missing_files(reader: Reader, until: date | None = None) -> list[Missing]:
    """Business days without a loaded file, per branch, from its first file to ``until``
    (default: the latest business day any branch delivered)."""
    rows = reader.query(
        """SELECT b.name, f.business_date
           FROM etl_file f JOIN dim_branch b ON b.branch_id = f.branch_id
           WHERE f.status = ? AND f.business_date IS NOT NULL""", [FileStatus.LOADED]
    )
    delivered: dict[str, set[date]] = {}
    for branch, day in rows:
        delivered.setdefault(branch, set()).add(day)
    if not delivered:
        return []
    end = until or max(max(days) for days in delivered.values())
    out = []
    for branch, days in sorted(delivered.items()):
        day = min(days)
        while day <= end:
            if day not in days:
                out.append(Missing(branch, day))
            day += timedelta(days=1)
    return out


@dataclass(frozen=True)
class Reject:
    file_id: int
    location: str
    source_row: int
    reason: str
    detail: str | None
    row_data: str | None


def rejects(reader: Reader, *, file: str | None = None, reason: str | None = None, limit: int = 50,
            offset: int = 0) -> tuple[int, list[Reject]]:
    """Quarantined rows, newest files first; ``file`` is a ledger id or part of a location."""
    clauses, params = ["1 = 1"], []
    if file:
        if file.isdigit():
            clauses.append("r.file_id = ?")
            params.append(int(file))
        else:
            clauses.append("f.location LIKE ?")
            params.append(f"%{file}%")
    if reason:
        clauses.append("r.reason_code = ?")
        params.append(reason.upper())
    where = " AND ".join(clauses)
    total = reader.scalar(
        f"SELECT count(*) FROM etl_reject r JOIN etl_file f ON f.file_id = r.file_id WHERE {where}", params)
    rows = reader.query(
        f"""SELECT r.file_id, f.location, r.source_row, r.reason_code, r.detail, r.row_data
            FROM etl_reject r JOIN etl_file f ON f.file_id = r.file_id
            WHERE {where}
            ORDER BY r.file_id DESC, r.source_row
            LIMIT ? OFFSET ?""",
        [*params, limit, offset],
    )
    return total, [Reject(*row) for row in rows]


@dataclass(frozen=True)
class ReplayCandidate:
    file_id: int
    location: str
    sha256: str
    status: str
    branch_id: str | None
    business_date: date | None
    rows_rejected: int


def replay_candidates(reader: Reader, *, file: str | None = None, branch: str | None = None,
                      day: date | None = None) -> list[ReplayCandidate]:
    """Failed versions, and loaded versions with rejected rows, narrowed by file, branch or date."""
    rows = reader.query(
        """SELECT file_id, location, content_sha256, status, branch_id, business_date, coalesce(rows_rejected, 0)
           FROM etl_file
           WHERE (status = ? AND content_sha256 <> '') OR (status = ? AND rows_rejected > 0)
           ORDER BY location""", [FileStatus.FAILED, FileStatus.LOADED]
    )
    out = [ReplayCandidate(*row) for row in rows]
    if file:
        out = [c for c in out if (c.file_id == int(file) if file.isdigit() else file in c.location)]
    if branch:
        wanted = " ".join(branch.lower().split())
        slug = wanted.replace(" ", "_")
        out = [c for c in out if c.branch_id == wanted or (c.branch_id is None and slug in c.location.lower())]
    if day:
        out = [c for c in out if (c.business_date or _day_in_name(c.location)) == day]
    return out


def _day_in_name(location: str) -> date | None:
    """The date in a canonical file name (branch_DD-MM-YYYY_HH-MM-SS.csv): a hint only."""
    match = _NAME_DATE.search(location.rsplit("/", 1)[-1])
    if not match:
        return None
    try:
        return date(int(match.group(3)), int(match.group(2)), int(match.group(1)))
    except ValueError:
        return None


# The operations page ---------------------------------------------------------
# A file's business day is the day of its sales; a file that could not be read as
# a branch export has none, so it counts on the day it was processed.

_FILE_DAY = "coalesce(f.business_date, CAST(f.processed_at AS DATE))"


def files_per_day(reader: Reader, first: date, last: date) -> list[dict]:
    """Files per business day by ledger status (loaded, failed, skipped, replaced, loading)."""
    rows = reader.query(
        f"""SELECT {_FILE_DAY} AS day, f.status, count(*)
            FROM etl_file f
            WHERE {_FILE_DAY} BETWEEN ? AND ?
            GROUP BY {_FILE_DAY}, f.status""", [first, last])
    per_day: dict[date, dict[str, int]] = {}
    for day, status, count in rows:
        per_day.setdefault(day, {})[status] = count
    return [{"date": day.isoformat(), **dict(sorted(per_day[day].items()))} for day in sorted(per_day)]


def arrivals(reader: Reader) -> dict:
    """Which branches' files are late or missing.

    Late: a branch that has delivered before but has no loaded file for the newest
    business day any branch has delivered (its file may still come). Missing: a day
    before that with no loaded file, from the branch's first delivery on."""
    gaps = missing_files(reader)
    newest = reader.scalar("SELECT max(business_date) FROM etl_file WHERE status = ?", [FileStatus.LOADED])
    branches = reader.scalar("SELECT count(DISTINCT branch_id) FROM etl_file WHERE status = ?",
                             [FileStatus.LOADED]) or 0
    late = [m.branch for m in gaps if m.day == newest] if newest else []
    missing = [{"branch": m.branch, "date": m.day.isoformat()} for m in gaps if m.day != newest]
    return {"latest_business_day": newest.isoformat() if newest else None, "branches": branches,
            "delivered": branches - len(late), "late": sorted(late),
            "missing": sorted(missing, key=lambda m: (m["date"], m["branch"]), reverse=True)}


def rejects_per_day(reader: Reader, first: date, last: date) -> list[dict]:
    rows = reader.query(
        f"""SELECT {_FILE_DAY} AS day, r.reason_code, count(*)
            FROM etl_reject r JOIN etl_file f ON f.file_id = r.file_id
            WHERE {_FILE_DAY} BETWEEN ? AND ?
            GROUP BY {_FILE_DAY}, r.reason_code""", [first, last])
    per_day: dict[date, dict[str, int]] = {}
    for day, reason, count in rows:
        per_day.setdefault(day, {})[reason] = count
    return [{"date": day.isoformat(), "reasons": dict(sorted(per_day[day].items()))} for day in sorted(per_day)]


def failed_files(reader: Reader, limit: int | None = 100, *, newest_first: bool = True) -> list[dict]:
    """Failed file versions, the newest first (or by location), with their errors."""
    order = "processed_at DESC, file_id DESC" if newest_first else "location, file_id"
    rows = reader.query(
        f"""SELECT file_id, location, business_date, processed_at, error
            FROM etl_file WHERE status = ?
            ORDER BY {order} LIMIT ?""", [FileStatus.FAILED, limit if limit is not None else 2**62])
    return [{"file_id": file_id, "location": location, "business_date": day.isoformat() if day else None,
             "processed_at": at.isoformat(timespec="seconds") if at else None, "error": error}
            for file_id, location, day, at, error in rows]


def runs(reader: Reader, limit: int = 100) -> list[dict]:
    """The latest runs, oldest first, with their throughput in rows per second."""
    rows = reader.query(
        """SELECT run_id, command, started_at, status, files_seen, files_loaded, files_failed, rows_loaded,
                  rows_rejected, seconds
           FROM etl_run ORDER BY run_id DESC LIMIT ?""", [limit])
    out = []
    for run_id, command, started, status, seen, loaded, failed, rows_loaded, rejected, seconds in reversed(rows):
        out.append({"run_id": run_id, "command": command,
                    "started_at": started.isoformat(timespec="seconds") if started else None, "status": status,
                    "files_seen": seen or 0, "files_loaded": loaded or 0, "files_failed": failed or 0,
                    "rows_loaded": rows_loaded or 0, "rows_rejected": rejected or 0,
                    "seconds": round(seconds, 3) if seconds else None,
                    "rows_per_second": round(rows_loaded / seconds, 1) if seconds and rows_loaded else None})
    return out


def ledger_window(reader: Reader) -> tuple[date | None, date | None]:
    """The first and last business day the ledger has files for (processing days when
    no file has a business day yet)."""
    low, high = reader.query("SELECT min(business_date), max(business_date) FROM etl_file")[0]
    if high is None:
        low, high = reader.query(f"SELECT min({_FILE_DAY}), max({_FILE_DAY}) FROM etl_file f")[0]
    return low, high
