"""Commands that read the warehouse: report, status, rejects, audit."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cafe_etl.cli.common import (
    DAY,
    EXIT_FILE_FAILED,
    err,
    handle_errors,
    main,
    out,
    print_json,
    settings,
    show,
    warehouse_option,
)


@main.command()
@click.option("--from", "first", type=DAY, default=None, help="First day: YYYY-MM-DD, today, yesterday or today-N")
@click.option("--to", "last", type=DAY, default=None, help="Last day: YYYY-MM-DD, today, yesterday or today-N")
@click.option("--branch", default=None, help="One branch, by name (any case)")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@warehouse_option
@handle_errors
def report(first, last, branch, fmt, warehouse) -> None:
    """What sells, where and when; customers; data quality."""
    from cafe_etl.analytics import render
    from cafe_etl.analytics import report as reports
    from cafe_etl.warehouse import open_warehouse

    with open_warehouse(settings(warehouse).warehouse).reader() as reader:
        data = reports.build(reader, reports.Filters(first, last, branch))
        note = _no_sales_note(reader, data, branch) if not data["totals"]["transactions"] else None
    show(data, fmt, render.to_csv, render.tables)
    if note:
        err.print(f"note: {note}")


def _no_sales_note(reader, data: dict, branch: str | None) -> str:
    """Which days hold sales, when the period asked for has none (the report stays the
    contract's, on stdout; the note goes to stderr)."""
    from cafe_etl.analytics import report as reports

    first, last = reports.sales_window(reader)
    if first is None:
        return "the warehouse holds no sales yet: run `cafe-etl ingest` first"
    period, held, where = data["period"], f"the warehouse holds sales from {first} to {last}", ""
    if branch:
        key = reports.resolve(reader, reports.Filters(branch=branch)).branch_key
        name = reader.scalar("SELECT name FROM dim_branch WHERE branch_key = ?", [key])
        own_first, own_last = reports.sales_window(reader, key)
        where = f" at {name}"
        held += f" ({name}: {f'{own_first} to {own_last}' if own_first else 'none'})"
    return f"no sales{where} from {period['from']} to {period['to']}; {held}"


@main.command()
@click.option("--json", "as_json", is_flag=True)
@warehouse_option
@handle_errors
def status(as_json, warehouse) -> None:
    """The ledger: files by status, the last run, rejects by reason, failed and missing files."""
    from cafe_etl.analytics import operations as ops
    from cafe_etl.cli import views
    from cafe_etl.warehouse import open_warehouse

    store = open_warehouse(settings(warehouse).warehouse)
    with store.reader() as r:
        state = ops.ledger_state(r)
        info = {
            "warehouse": store.describe(),
            "files_by_status": state.files,
            "warehouse_counts": ops.warehouse_counts(r),
            "last_run": ops.last_run(r),
            "last_successful_load": state.last_success,
            "rejects_by_reason": state.rejects,
            "failed_files": ops.failed_files(r, limit=None, newest_first=False),
            "missing_files": ops.missing_files(r),
        }
    if as_json:
        print_json(info | {
            "failed_files": [{"location": f["location"], "error": f["error"]} for f in info["failed_files"]],
            "missing_files": [{"branch": m.branch, "date": m.day.isoformat()} for m in info["missing_files"]],
        })
    else:
        views.status(info, out)


@main.command()
@click.option("--file", "file", default=None, help="A ledger file id, or part of a file's location")
@click.option("--reason", default=None, help="A reason code, e.g. TOTAL_MISMATCH")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@warehouse_option
@handle_errors
def rejects(file, reason, limit, fmt, warehouse) -> None:
    """Quarantined rows with their reasons (personal data removed)."""
    import csv
    from dataclasses import asdict

    from cafe_etl.analytics import names
    from cafe_etl.analytics import operations as ops
    from cafe_etl.cli import views
    from cafe_etl.warehouse import open_warehouse

    with open_warehouse(settings(warehouse).warehouse).reader() as r:
        if file:
            names.file_filter(r, file)
        if reason:
            reason = names.reason_code(r, reason)
        total, rows = ops.rejects(r, file=file, reason=reason, limit=limit)
    if fmt == "json":
        print_json({"total": total, "rejects": [asdict(x) for x in rows]})
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["file_id", "location", "source_row", "reason", "detail", "row_data"])
        writer.writerows([[x.file_id, x.location, x.source_row, x.reason, x.detail, x.row_data] for x in rows])
    else:
        views.rejects(total, rows, out)


@main.command()
@click.option("--file", "files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Also scan this text file (a log, an export); repeatable")
@click.option("--json", "as_json", is_flag=True)
@warehouse_option
@handle_errors
def audit(files, as_json, warehouse) -> None:
    """Search every text column of the warehouse (quarantine included), and any --file,
    for card numbers (Luhn-valid runs of 13-19 digits). Exit 1 when any is found."""
    from cafe_etl.analytics import audit as audits
    from cafe_etl.warehouse import open_warehouse

    with open_warehouse(settings(warehouse).warehouse).reader() as reader:
        columns, findings = audits.scan_warehouse(reader)
    findings += audits.scan_files(files)
    if as_json:
        print_json({"columns_scanned": columns, "files_scanned": len(files),
                    "findings": [{"where": f.where, "last4": f.last4} for f in findings]})
    else:
        for finding in findings:
            out.print(finding.describe())
        verdict = f"{len(findings)} card-like number(s) found" if findings else "no card-like number found"
        out.print(f"audit: {columns} text columns and {len(files)} file(s) scanned; {verdict}")
    if findings:
        sys.exit(EXIT_FILE_FAILED)
