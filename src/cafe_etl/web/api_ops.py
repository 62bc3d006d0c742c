"""The JSON API's operations endpoints (DESIGN §9): files, arrivals, rejects, runs,
suspect days and the service's own state, read from the ledger. The plumbing (the
gateway, JSON or CSV answers, errors) is the business API's (web/api.py)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request

from cafe_etl import __version__
from cafe_etl.analytics import operations, trends
from cafe_etl.web import filters as web_filters
from cafe_etl.web.api import _ERRORS, From, To, _answer, _gateway, _week
from cafe_etl.web.responses import MoneyJSON

router = APIRouter(prefix="/api", default_response_class=MoneyJSON)


def _ops_period(reader, first: str | None, to: str | None):
    return web_filters.operations_period(reader, web_filters.parse(first, to, None))


@router.get("/ops/files", summary="Files per business day by ledger status", tags=["ops"], responses=_ERRORS)
def ops_files(request: Request, first: From = None, to: To = None) -> MoneyJSON:
    """Files per business day (the day of their sales, or of processing when unreadable) by status."""
    web_filters.parse(first, to, None)

    def compute(reader):
        start, last = _ops_period(reader, first, to)
        data = operations.files_per_day(reader, start, last) if start else []
        return {"period": {"from": start and start.isoformat(), "to": last and last.isoformat()}, "data": data}

    return _answer(request, ("ops/files", first, to), compute)


@router.get("/ops/arrivals", summary="Branches whose file is late or missing", tags=["ops"], responses=_ERRORS)
def ops_arrivals(request: Request) -> MoneyJSON:
    """Late: no file yet for the newest business day. Missing: an earlier day without a loaded file."""
    return _answer(request, ("ops/arrivals",), lambda reader: {"data": operations.arrivals(reader)})


@router.get("/ops/rejects", summary="Rejected rows per business day by reason", tags=["ops"], responses=_ERRORS)
def ops_rejects(request: Request, first: From = None, to: To = None) -> MoneyJSON:
    """Quarantined rows per business day, by reason code, with the totals by reason."""
    web_filters.parse(first, to, None)

    def compute(reader):
        start, last = _ops_period(reader, first, to)
        return {"period": {"from": start and start.isoformat(), "to": last and last.isoformat()},
                "data": {"days": operations.rejects_per_day(reader, start, last) if start else [],
                         "by_reason": operations.rejects_by_reason(reader)}}

    return _answer(request, ("ops/rejects", first, to), compute)


Reason = Annotated[str | None, Query(max_length=40, pattern=r"^[A-Za-z_]+$", description="A reason code")]
FileFilter = Annotated[str | None, Query(max_length=300, description="A ledger file id, or part of a location")]


@router.get("/ops/reject-rows", summary="The quarantined rows themselves (no personal data)", tags=["ops"],
            responses=_ERRORS)
def ops_reject_rows(request: Request, reason: Reason = None, file: FileFilter = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50,
                    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> MoneyJSON:
    """Rejected rows, newest files first: file, row number, reason, detail, and the row with
    its customer name and card number removed."""

    def compute(reader):
        total, rows = operations.rejects(reader, file=file, reason=reason, limit=limit, offset=offset)
        return {"total": total, "offset": offset,
                "data": [{"file_id": r.file_id, "location": r.location, "row": r.source_row, "reason": r.reason,
                          "detail": r.detail, "row_data": r.row_data} for r in rows]}

    return _answer(request, ("ops/reject-rows", reason, file, limit, offset), compute)


@router.get("/ops/suspect-days", summary="Short and missing branch-days of the latest week", tags=["ops"],
            responses=_ERRORS)
def ops_suspect_days(request: Request) -> MoneyJSON:
    """Branch-days of the last 7 days with sales that look like a partial till export (``short``:
    low, and the last sale hours before the branch usually closes) or a lost one (``missing``: no
    sales where the branch's history expects some)."""

    def part(reader, week):
        return [a for a in trends.anomalies(reader, week) if a["kind"] in trends.SUSPECT_KINDS]

    return _week(request, None, None, part, ("ops/suspect-days",))


@router.get("/ops/failed", summary="Files that failed, with their error", tags=["ops"], responses=_ERRORS)
def ops_failed(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> MoneyJSON:
    """The latest failed files (location, business day if known, when, why)."""
    return _answer(request, ("ops/failed", limit), lambda reader: {"data": operations.failed_files(reader, limit)})


@router.get("/ops/runs", summary="Ingest runs and their throughput", tags=["ops"], responses=_ERRORS)
def ops_runs(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> MoneyJSON:
    """The latest runs, oldest first: files, rows, seconds and rows per second."""
    return _answer(request, ("ops/runs", limit), lambda reader: {"data": operations.runs(reader, limit)})


@router.get("/ops/service", summary="Service state: last ingest, uptime, version", tags=["ops"], responses=_ERRORS)
def ops_service(request: Request) -> MoneyJSON:
    """The last successful ingest, the ledger's files by status, this service's uptime and version,
    and the watcher's state when the service runs one."""
    state = request.app.state

    def compute(reader):
        state = operations.ledger_state(reader)
        last = state.last_success
        return {"last_success": last.isoformat(timespec="seconds") if last else None, "files": state.files}

    data = _gateway(request).read(compute).value
    data.update({"version": __version__, "warehouse": state.gateway.warehouse.describe(),
                 "started_at": state.started_at_iso, "uptime_seconds": round(time.time() - state.started_at, 1),
                 "watch": state.watch_status()})
    return MoneyJSON({"data": data})
