"""Terminal views of runs, the ledger and rejects (Rich). The report has its own, in analytics.render."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cafe_etl.analytics.operations import Missing, Reject
from cafe_etl.pipeline.results import OUTCOMES, Problem, RunSummary

MAX_LISTED = 20


def _name(location: str) -> str:
    return location.rsplit("/", 1)[-1]


def run_summary(summary: RunSummary, console: Console) -> None:
    table = Table(title=f"{summary.command} · run {summary.run_id or '-'} · {summary.warehouse}",
                  title_justify="left", header_style="bold magenta")
    for column in ("files", *[o for o in OUTCOMES if summary.count(o)], "rows loaded", "rows rejected", "seconds",
                   "rows/s"):
        table.add_column(column, justify="right")
    rate = summary.rows_loaded / summary.seconds if summary.seconds else 0
    table.add_row(str(len(summary.files)), *[str(summary.count(o)) for o in OUTCOMES if summary.count(o)],
                  f"{summary.rows_loaded:,}", f"{summary.rows_rejected:,}", f"{summary.seconds:.2f}", f"{rate:,.0f}")
    console.print(table)
    reasons = summary.rejects_by_reason()
    if reasons:
        console.print("rejected rows by reason: " + ", ".join(f"{k} {v:,}" for k, v in reasons.items()))
    failed = [f for f in summary.files if f.outcome == "failed"]
    for f in failed[:MAX_LISTED]:
        console.print(f"[red]failed[/red] {_name(f.location)}: {f.error}")
    if len(failed) > MAX_LISTED:
        console.print(f"… and {len(failed) - MAX_LISTED} more failed files (see `cafe-etl status`)")


def problems(found: list[Problem], console: Console) -> None:
    table = Table(header_style="bold magenta")
    for column in ("file", "line", "reason", "detail"):
        table.add_column(column)
    for p in found:
        table.add_row(_name(p.location), "" if p.line is None else str(p.line), p.reason, p.detail)
    console.print(table)


def status(info: dict, console: Console) -> None:
    console.print(f"[bold]warehouse[/bold] {info['warehouse']}")
    files = Table(title="Files by status", title_justify="left", header_style="bold magenta")
    files.add_column("status")
    files.add_column("files", justify="right")
    for name, n in info["files_by_status"].items():
        files.add_row(name, f"{n:,}")
    console.print(files)
    c = info["warehouse_counts"]
    console.print(f"sales {c['sales']:,} · items {c['items']:,} · branches {c['branches']:,} · "
                  f"from {c['first_sale'] or '-'} to {c['last_sale'] or '-'}")
    run = info["last_run"]
    if run:
        rate = f"{run['rows_per_second']:,.0f} rows/s" if run["rows_per_second"] else "-"
        started = f"{run['started_at']:%Y-%m-%d %H:%M:%S}"
        console.print(f"last run {run['run_id']} ({run['command']}, {run['status']}) started {started}: "
                      f"{run['files_loaded']} loaded, {run['files_failed']} failed, {run['files_skipped']} skipped, "
                      f"{run['rows_loaded']:,} rows in {run['seconds'] or 0:.2f}s ({rate})")
    reasons = info["rejects_by_reason"]
    console.print("rejected rows: " + (", ".join(f"{k} {v:,}" for k, v in reasons.items()) if reasons else "none"))
    for f in info["failed_files"][:MAX_LISTED]:
        console.print(f"[red]failed[/red] {_name(f['location'])}: {f['error']}")
    missing: list[Missing] = info["missing_files"]
    if missing:
        shown = ", ".join(f"{m.branch} {m.day}" for m in missing[:MAX_LISTED])
        more = f" … and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        console.print(f"[yellow]missing files ({len(missing)})[/yellow]: {shown}{more}")


def rejects(total: int, rows: list[Reject], console: Console) -> None:
    table = Table(title=f"{len(rows)} of {total:,} rejected rows", title_justify="left", header_style="bold magenta")
    for column in ("file", "row", "reason", "detail", "row (personal data removed)"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(f"{r.file_id} {_name(r.location)}", str(r.source_row), r.reason, r.detail or "", r.row_data or "")
    console.print(table)
