"""Commands that load or check branch exports: generate, ingest, validate, replay, watch, demo."""

from __future__ import annotations

import os
import sys
from datetime import date, timedelta
from pathlib import Path

import click

from cafe_etl.cli.common import (
    DAY,
    EXIT_FILE_FAILED,
    handle_errors,
    key_options,
    main,
    out,
    print_json,
    progress,
    s3_option,
    settings,
    warehouse_option,
)
from cafe_etl.config import DEFAULT_LANDING, EXECUTORS


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--branches", type=click.IntRange(1, 5000), default=25, show_default=True)
@click.option("--days", type=click.IntRange(1, 3660), default=28, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--start", type=DAY, default=None, help="First business day [2024-03-04]")
@click.option("--bad-rate", type=click.FloatRange(0, 0.5), default=0.0, show_default=True,
              help="Share of rows replaced by bad rows of every kind")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Worker processes [one per CPU]")
@click.option("--plant-trends", is_flag=True,
              help="Plant changes of known size in the last week (movers, short and busy days) for `trends`")
@handle_errors
def generate(out_dir, branches, days, seed, start, bad_rate, workers, plant_trends) -> None:
    """Write realistic branch exports into OUT_DIR, with their expected figures in _expected.json."""
    from cafe_etl.generate import DEFAULT_START
    from cafe_etl.generate import generate as run_generate

    result = run_generate(out_dir, branches=branches, days=days, seed=seed, start=start or DEFAULT_START,
                          bad_rate=bad_rate, workers=workers, plant_trends=plant_trends)
    out.print(f"wrote {result.files:,} files ({result.bytes / 1e6:,.1f} MB, {result.transactions:,} transactions, "
              f"{result.rejected:,} bad rows) to {out_dir}; expected figures in {result.expected_path}")


def run_ingest(sources, chosen, command: str = "ingest", log_format: str | None = None):
    from cafe_etl.pipeline.run import ingest
    from cafe_etl.sources import discover

    files = discover(sources, chosen.s3_endpoint_url)
    events = {}
    if log_format:  # one line per claimed batch and per file, as `watch` logs them
        from functools import partial

        from cafe_etl import logs

        log = logs.setup(log_format)
        events = {"batch_claimed": lambda claimed: logs.event(log, "claimed", files=len(claimed)),
                  "batch_done": partial(logs.file_outcomes, log)}
    with progress(command, len(files)) as advance:
        return ingest(sources, chosen, command=command, progress=advance, files=files, **events)


def show_run(summary, as_json: bool) -> None:
    from cafe_etl.cli import views

    if as_json:
        print_json(summary.to_dict())
    else:
        views.run_summary(summary, out)
    if not summary.ok:
        sys.exit(EXIT_FILE_FAILED)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Also log each claimed batch and each file's outcome on stderr, as they happen")
@click.option("--executor", type=click.Choice(EXECUTORS), default=None,
              help="Where batches are transformed: this process, or Spark tasks [env CAFE_ETL_EXECUTOR; local]")
@click.option("--spark-master", default=None, metavar="URL",
              help="The Spark master of --executor spark [env CAFE_ETL_SPARK_MASTER; local[*]]")
@warehouse_option
@key_options
@s3_option
@handle_errors
def ingest(sources, as_json, log_format, executor, spark_master, warehouse, key_file, customer_keys,
           s3_endpoint_url) -> None:
    """Load new and changed branch exports from SOURCES (files, folders, globs,
    s3://bucket/prefix or s3://bucket/key.csv).

    Exit status 0 when every file was processed (even with rejected rows), 1 when a
    file failed, 2 or 3 when the sources or the warehouse cannot be used."""
    chosen = settings(warehouse, key_file, customer_keys, s3_endpoint_url).with_overrides(
        executor=executor, spark_master=spark_master)
    show_run(run_ingest(sources, chosen, log_format=log_format), as_json)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print every problem as JSON")
@key_options
@s3_option
@handle_errors
def validate(sources, as_json, key_file, customer_keys, s3_endpoint_url) -> None:
    """Check SOURCES with the same rules as ingest; load nothing, list every problem."""
    from dataclasses import asdict

    from cafe_etl.cli import views
    from cafe_etl.pipeline.dryrun import dry_run
    from cafe_etl.sources import discover

    chosen = settings(None, key_file, customer_keys, s3_endpoint_url)
    files = discover(sources, chosen.s3_endpoint_url)
    with progress("validate", len(files)) as advance:
        summary, found = dry_run(sources, chosen, progress=advance, files=files)
    if as_json:
        print_json(summary.to_dict() | {"problems": [asdict(p) for p in found]})
    else:
        if found:
            views.problems(found, out)
        views.run_summary(summary, out)
    if not summary.ok:
        sys.exit(EXIT_FILE_FAILED)


@main.command()
@click.option("--file", "file", default=None, help="A ledger file id, or part of a file's location")
@click.option("--branch", default=None, help="Only this branch's files")
@click.option("--date", "day", type=DAY, default=None, help="Only this business day's files")
@click.option("--json", "as_json", is_flag=True)
@warehouse_option
@key_options
@s3_option
@handle_errors
def replay(file, branch, day, as_json, warehouse, key_file, customer_keys, s3_endpoint_url) -> None:
    """Process again the failed files and the files with rejected rows (e.g. after a rule fix)."""
    from cafe_etl.analytics import names, operations
    from cafe_etl.pipeline.run import replay as run_replay
    from cafe_etl.warehouse import open_warehouse

    chosen = settings(warehouse, key_file, customer_keys, s3_endpoint_url)
    with open_warehouse(chosen.warehouse).reader() as reader:
        if file:
            names.file_filter(reader, file)
        if branch:
            names.branch(reader, branch)
        candidates = operations.replay_candidates(reader, file=file, branch=branch, day=day)
    summary = run_replay(chosen, candidates)
    if not summary.files and not as_json:
        out.print("nothing to replay: no failed file and no file with rejected rows matches")
        return
    show_run(summary, as_json)


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

    chosen = settings(warehouse, key_file, customer_keys, s3_endpoint_url)
    check_sources(sources)
    watcher = Watcher(sources, chosen, WatchOptions(interval, settle, reconcile_every), logs.setup(log_format))
    watcher.install_signal_handlers()
    watcher.run()


def check_sources(sources) -> None:
    """A local folder that does not exist is a typing mistake, better caught now than
    logged every poll."""
    from cafe_etl.sources import local
    from cafe_etl.sources.base import is_s3

    for spec in sources:
        if not is_s3(spec) and not local.is_glob(spec) and not os.path.exists(spec):
            raise click.BadParameter(f"no such file or folder: {spec}", param_hint="SOURCES")


@main.command()
@click.option("--branches", type=click.IntRange(1, 5000), default=25, show_default=True)
@click.option("--days", type=click.IntRange(1, 3660), default=42, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--start", type=DAY, default=None, help="First business day [the --days days up to yesterday]")
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
    """Generate six weeks of a chain's exports into the landing folder (the last week with changes
    for `trends` to find), ingest them, print the report, then serve the dashboard on it."""
    from cafe_etl.analytics import render
    from cafe_etl.analytics import report as reports
    from cafe_etl.cli import views
    from cafe_etl.cli.serving import serve_dashboard
    from cafe_etl.generate import generate as run_generate
    from cafe_etl.warehouse import open_warehouse

    first = start or date.today() - timedelta(days=days)
    chosen = settings(warehouse, key_file, customer_keys)
    result = run_generate(landing, branches=branches, days=days, seed=seed, start=first, bad_rate=bad_rate,
                          plant_trends=True)
    out.print(f"generated {result.files:,} files ({result.transactions:,} transactions) in {landing}")
    summary = run_ingest([str(landing)], chosen, command="demo")
    views.run_summary(summary, out)
    with open_warehouse(chosen.warehouse).reader() as reader:
        data = reports.build(reader, reports.Filters())
    render.print_tables(data, out)
    example = f" --branch \"{data['branches'][0]['branch']}\"" if data["branches"] else ""
    out.print(f"warehouse: {chosen.warehouse} · try `cafe-etl report --from today-7{example}`, "
              "`cafe-etl status`, `cafe-etl rejects`", soft_wrap=True)
    if not no_serve:
        serve_dashboard(chosen, "127.0.0.1", port, None, False)
