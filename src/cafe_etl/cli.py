"""The ``cafe-etl`` command line (DESIGN §8): parse options, call the library, print.

A user mistake (missing file, bad URL, unreadable warehouse) is one clear line on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cafe_etl import __version__
from cafe_etl.config import DEFAULT_LANDING, ENV_AUTH_TOKEN, ENV_WAREHOUSE, load_settings
from cafe_etl.errors import CafeEtlError

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_FILE_FAILED = 1
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/bold red] {message}", markup=True, highlight=False)
    sys.exit(code)


def handle_errors(command: Callable) -> Callable:
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CafeEtlError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
            if os.environ.get("CAFE_ETL_DEBUG"):
                raise
            _fail(f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                  "(set CAFE_ETL_DEBUG=1 for details)", 70)

    return wrapper


def warehouse_option(command: Callable) -> Callable:
    return click.option(
        "--warehouse", "warehouse", envvar=ENV_WAREHOUSE, default=None, metavar="URL",
        help="duckdb:///path/file.duckdb or a file path [env CAFE_ETL_WAREHOUSE; default data/warehouse.duckdb]",
    )(command)


def key_options(command: Callable) -> Callable:
    command = click.option(
        "--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Secret for customer keys [env CAFE_ETL_KEY_FILE; default ~/.config/cafe-etl/customer-key]",
    )(command)
    return click.option("--customer-keys/--no-customer-keys", default=None,
                        help="Keep a keyed hash of each customer for new-vs-returning analysis [default: on]")(command)


def s3_option(command: Callable) -> Callable:
    return click.option(
        "--s3-endpoint-url", default=None, metavar="URL",
        help="An S3-compatible store for s3:// sources [env AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; default AWS]",
    )(command)


def _settings(warehouse=None, key_file=None, customer_keys=None, s3_endpoint_url=None):
    return load_settings(warehouse=warehouse, key_file=key_file, customer_keys=customer_keys,
                         s3_endpoint_url=s3_endpoint_url)


@contextmanager
def _progress(label: str, total_files: int):
    """A progress bar on stderr when it is a terminal; a no-op callback otherwise."""
    if not err.is_terminal or total_files == 0:
        yield lambda files, size: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("files"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=total_files)
        yield lambda files, size: bar.advance(task, files)


def _json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="cafe-etl")
def main() -> None:
    """ETL and analytics for a café chain: nightly branch exports into a PII-free star-schema warehouse."""


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--branches", type=click.IntRange(1, 5000), default=25, show_default=True)
@click.option("--days", type=click.IntRange(1, 3660), default=28, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default=None, help="First business day [2024-03-04]")
@click.option("--bad-rate", type=click.FloatRange(0, 0.5), default=0.0, show_default=True,
              help="Share of rows replaced by bad rows of every kind")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Worker processes [one per CPU]")
@handle_errors
def generate(out_dir, branches, days, seed, start, bad_rate, workers) -> None:
    """Write realistic branch exports into OUT_DIR, with their expected figures in _expected.json."""
    from cafe_etl.generate import DEFAULT_START
    from cafe_etl.generate import generate as run_generate

    result = run_generate(out_dir, branches=branches, days=days, seed=seed,
                          start=start.date() if start else DEFAULT_START, bad_rate=bad_rate, workers=workers)
    out.print(f"wrote {result.files:,} files ({result.bytes / 1e6:,.1f} MB, {result.transactions:,} transactions, "
              f"{result.rejected:,} bad rows) to {out_dir}; expected figures in {result.expected_path}")


def _ingest(sources, settings, command: str = "ingest"):
    from cafe_etl.pipeline.run import ingest
    from cafe_etl.sources import discover

    files = discover(sources, settings.s3_endpoint_url)
    with _progress(command, len(files)) as progress:
        summary = ingest(sources, settings, command=command, progress=progress, files=files)
    return summary


def _show_run(summary, as_json: bool) -> None:
    from cafe_etl import views

    if as_json:
        _json(summary.to_dict())
    else:
        views.run_summary(summary, out)
    if not summary.ok:
        sys.exit(EXIT_FILE_FAILED)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary")
@warehouse_option
@key_options
@s3_option
@handle_errors
def ingest(sources, as_json, warehouse, key_file, customer_keys, s3_endpoint_url) -> None:
    """Load new and changed branch exports from SOURCES (files, folders, globs,
    s3://bucket/prefix or s3://bucket/key.csv).

    Exit status 0 when every file was processed (even with rejected rows), 1 when a
    file failed, 2 or 3 when the sources or the warehouse cannot be used."""
    settings = _settings(warehouse, key_file, customer_keys, s3_endpoint_url)
    _show_run(_ingest(sources, settings), as_json)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print every problem as JSON")
@key_options
@s3_option
@handle_errors
def validate(sources, as_json, key_file, customer_keys, s3_endpoint_url) -> None:
    """Check SOURCES with the same rules as ingest; load nothing, list every problem."""
    from dataclasses import asdict

    from cafe_etl import views
    from cafe_etl.pipeline.run import validate_files
    from cafe_etl.sources import discover

    settings = _settings(None, key_file, customer_keys, s3_endpoint_url)
    files = discover(sources, settings.s3_endpoint_url)
    with _progress("validate", len(files)) as progress:
        summary, found = validate_files(sources, settings, progress=progress, files=files)
    if as_json:
        _json(summary.to_dict() | {"problems": [asdict(p) for p in found]})
    else:
        if found:
            views.problems(found, out)
        views.run_summary(summary, out)
    if not summary.ok:
        sys.exit(EXIT_FILE_FAILED)


@main.command()
@click.option("--from", "first", type=click.DateTime(["%Y-%m-%d"]), default=None, help="First day (YYYY-MM-DD)")
@click.option("--to", "last", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last day (YYYY-MM-DD)")
@click.option("--branch", default=None, help="One branch, by name (any case)")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@warehouse_option
@handle_errors
def report(first, last, branch, fmt, warehouse) -> None:
    """What sells, where and when; customers; data quality."""
    from cafe_etl.analytics import jsonout, render
    from cafe_etl.analytics import report as reports
    from cafe_etl.warehouse import open_warehouse

    filters = reports.Filters(first.date() if first else None, last.date() if last else None, branch)
    with open_warehouse(_settings(warehouse).warehouse).reader() as reader:
        data = reports.build(reader, filters)
    if fmt == "json":
        click.echo(jsonout.dumps(data))
    elif fmt == "csv":
        click.echo(render.to_csv(data), nl=False)
    else:
        render.print_tables(data, out)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@warehouse_option
@handle_errors
def status(as_json, warehouse) -> None:
    """The ledger: files by status, the last run, rejects by reason, failed and missing files."""
    from cafe_etl import views
    from cafe_etl.analytics import operations as ops
    from cafe_etl.warehouse import open_warehouse

    store = open_warehouse(_settings(warehouse).warehouse)
    with store.reader() as r:
        info = {
            "warehouse": store.describe(),
            "files_by_status": ops.files_by_status(r),
            "warehouse_counts": ops.warehouse_counts(r),
            "last_run": ops.last_run(r),
            "last_successful_load": r.scalar("SELECT max(processed_at) FROM etl_file WHERE status = 'loaded'"),
            "rejects_by_reason": ops.rejects_by_reason(r),
            "failed_files": r.query("SELECT location, error FROM etl_file WHERE status = 'failed' ORDER BY location"),
            "missing_files": ops.missing_files(r),
        }
    if as_json:
        _json(info | {
            "failed_files": [{"location": loc, "error": e} for loc, e in info["failed_files"]],
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

    from cafe_etl import views
    from cafe_etl.analytics import operations as ops
    from cafe_etl.warehouse import open_warehouse

    with open_warehouse(_settings(warehouse).warehouse).reader() as r:
        total, rows = ops.rejects(r, file=file, reason=reason, limit=limit)
    if fmt == "json":
        _json({"total": total, "rejects": [asdict(x) for x in rows]})
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["file_id", "location", "source_row", "reason", "detail", "row_data"])
        writer.writerows([[x.file_id, x.location, x.source_row, x.reason, x.detail, x.row_data] for x in rows])
    else:
        views.rejects(total, rows, out)


@main.command()
@click.option("--file", "file", default=None, help="A ledger file id, or part of a file's location")
@click.option("--branch", default=None, help="Only this branch's files")
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Only this business day's files")
@click.option("--json", "as_json", is_flag=True)
@warehouse_option
@key_options
@s3_option
@handle_errors
def replay(file, branch, day, as_json, warehouse, key_file, customer_keys, s3_endpoint_url) -> None:
    """Process again the failed files and the files with rejected rows (e.g. after a rule fix)."""
    from cafe_etl.pipeline.run import replay as run_replay

    settings = _settings(warehouse, key_file, customer_keys, s3_endpoint_url)
    summary = run_replay(settings, file=file, branch=branch, day=day.date() if day else None)
    if not summary.files and not as_json:
        out.print("nothing to replay: no failed file and no file with rejected rows matches")
        return
    _show_run(summary, as_json)


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

    with open_warehouse(_settings(warehouse).warehouse).reader() as reader:
        columns, findings = audits.scan_warehouse(reader)
    findings += audits.scan_files(files)
    if as_json:
        _json({"columns_scanned": columns, "files_scanned": len(files),
               "findings": [{"where": f.where, "last4": f.last4} for f in findings]})
    else:
        for finding in findings:
            out.print(finding.describe())
        verdict = f"{len(findings)} card-like number(s) found" if findings else "no card-like number found"
        out.print(f"audit: {columns} text columns and {len(files)} file(s) scanned; {verdict}")
    if findings:
        sys.exit(EXIT_FILE_FAILED)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--interval", type=click.FloatRange(0.1, 86400), default=30.0, show_default=True,
              help="Seconds between polls")
@click.option("--settle", type=click.FloatRange(0, 3600), default=2.0, show_default=True,
              help="A local file unchanged for this many seconds is complete")
@click.option("--reconcile-every", type=click.FloatRange(1, 7 * 86400), default=3600.0, show_default=True,
              help="Seconds between full listings checked against the ledger")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@warehouse_option
@key_options
@s3_option
@handle_errors
def watch(sources, interval, settle, reconcile_every, log_format, warehouse, key_file, customer_keys,
          s3_endpoint_url) -> None:
    """Ingest files as they land in SOURCES (folders, globs, s3://bucket/prefix) until stopped.

    One log line per file (location, outcome, rows, seconds). SIGINT or SIGTERM
    finishes the batch in hand and exits 0."""
    from cafe_etl import logs
    from cafe_etl.watch import Watcher, WatchOptions

    settings = _settings(warehouse, key_file, customer_keys, s3_endpoint_url)
    _check_sources(sources)
    watcher = Watcher(sources, settings, WatchOptions(interval, settle, reconcile_every),
                      logs.setup(log_format))
    watcher.install_signal_handlers()
    watcher.run()


def _check_sources(sources) -> None:
    """A local folder that does not exist is a typing mistake, better caught now than
    logged every poll."""
    from cafe_etl.sources import local
    from cafe_etl.sources.base import is_s3

    for spec in sources:
        if not is_s3(spec) and not local.is_glob(spec) and not os.path.exists(spec):
            raise click.BadParameter(f"no such file or folder: {spec}", param_hint="SOURCES")

@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --auth-token (or --no-auth)")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--watch", "watch_sources", multiple=True, metavar="SOURCE",
              help="Also ingest files landing in SOURCE (folder, glob or s3:// prefix); repeatable")
@click.option("--interval", type=click.FloatRange(0.1, 86400), default=30.0, show_default=True,
              help="Seconds between polls of --watch sources")
@click.option("--auth-token", envvar=ENV_AUTH_TOKEN, default=None, metavar="TOKEN",
              help="Token every page and API call must carry [env CAFE_ETL_AUTH_TOKEN]")
@click.option("--no-auth", is_flag=True, help="Serve a non-loopback address without a token (not recommended)")
@click.option("--query-timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              help="Seconds any one dashboard query may run")
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request")
@warehouse_option
@key_options
@s3_option
@handle_errors
def serve(host, port, watch_sources, interval, auth_token, no_auth, query_timeout, access_log, warehouse, key_file,
          customer_keys, s3_endpoint_url) -> None:
    """Serve the dashboard, its JSON API (/docs), /metrics, /healthz and /readyz."""
    settings = _settings(warehouse, key_file, customer_keys, s3_endpoint_url)
    if watch_sources:
        _check_sources(watch_sources)
    _serve(settings, host, port, auth_token, no_auth, watch_sources=watch_sources, interval=interval,
           query_timeout=query_timeout, access_log=access_log)


def _serve(settings, host, port, auth_token, no_auth, *, watch_sources=(), interval=30.0, query_timeout=10.0,
           access_log=False) -> None:
    import socket

    from cafe_etl.web import server
    from cafe_etl.web.app import ServeOptions, create_app
    from cafe_etl.web.gateway import Limits
    from cafe_etl.web.security import required_token

    token = required_token(host, auth_token, no_auth)
    try:  # a clear message now rather than a log line from inside the server
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    app = create_app(settings, ServeOptions(token=token, watch=tuple(watch_sources), watch_interval=interval,
                                            limits=Limits(time_limit=query_timeout)))
    shown = f"[{host}]" if ":" in host else host
    out.print(f"dashboard: http://{shown}:{port}/  ·  API: http://{shown}:{port}/docs  ·  "
              f"metrics: http://{shown}:{port}/metrics  (Ctrl-C to stop)")
    if token:
        out.print("an access token is required: open the dashboard once with ?token=<token>")
    server.run(app, host, port, access_log=access_log)


@main.command()
@click.option("--branches", type=click.IntRange(1, 5000), default=25, show_default=True)
@click.option("--days", type=click.IntRange(1, 3660), default=28, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="First business day [the 28 days up to yesterday]")
@click.option("--bad-rate", type=click.FloatRange(0, 0.5), default=0.005, show_default=True)
@click.option("--landing", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_LANDING,
              show_default=True)
@click.option("--no-serve", is_flag=True, help="Stop after the report instead of serving the dashboard")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="Port of the dashboard (on 127.0.0.1)")
@warehouse_option
@key_options
@handle_errors
def demo(branches, days, seed, start, bad_rate, landing, no_serve, port, warehouse, key_file, customer_keys) -> None:
    """Generate a chain's month of exports into the landing folder, ingest it, print the report,
    then serve the dashboard on it."""
    from cafe_etl.analytics import render
    from cafe_etl.analytics import report as reports
    from cafe_etl.generate import generate as run_generate
    from cafe_etl.warehouse import open_warehouse

    first = start.date() if start else date.today() - timedelta(days=days)
    settings = _settings(warehouse, key_file, customer_keys)
    result = run_generate(landing, branches=branches, days=days, seed=seed, start=first, bad_rate=bad_rate)
    out.print(f"generated {result.files:,} files ({result.transactions:,} transactions) in {landing}")
    summary = _ingest([str(landing)], settings, command="demo")
    from cafe_etl import views

    views.run_summary(summary, out)
    with open_warehouse(settings.warehouse).reader() as reader:
        render.print_tables(reports.build(reader, reports.Filters()), out)
    out.print(f"warehouse: {settings.warehouse} · try `cafe-etl report --format json`, `cafe-etl status`, "
              "`cafe-etl rejects`")
    if not no_serve:
        _serve(settings, "127.0.0.1", port, None, False)


if __name__ == "__main__":  # pragma: no cover
    main()
