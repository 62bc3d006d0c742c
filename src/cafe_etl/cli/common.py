"""What every command shares: the group, one-line errors, options, dates, output.

A user mistake (a bad option, a missing file, an unknown branch, an unusable
warehouse) is one line on stderr and a non-zero exit, never a traceback or click's
usage block.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cafe_etl import __version__
from cafe_etl.config import ENV_WAREHOUSE, load_settings
from cafe_etl.errors import CafeEtlError, redact
from cafe_etl.rules import FIRST_DAY, LAST_DAY

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_FILE_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_UNEXPECTED = 70


def fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(redact(_one_line(message)))}", markup=True, highlight=False)
    sys.exit(code)


def _one_line(message: str) -> str:
    return " ".join(message.split())


class CafeEtlGroup(click.Group):
    """click's own mistakes (an unknown command, a bad option value) as one line,
    keeping click's "did you mean" hint, instead of its usage block."""

    def main(self, args=None, prog_name=None, **extra):
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            fail(exc.format_message().rstrip(".") + hint, exc.exit_code)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            err.print("aborted")
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


def handle_errors(command: Callable) -> Callable:
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CafeEtlError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
            if os.environ.get("CAFE_ETL_DEBUG"):
                raise
            fail(f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                 "(set CAFE_ETL_DEBUG=1 for details)", EXIT_UNEXPECTED)

    return wrapper


@click.group(cls=CafeEtlGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="cafe-etl")
def main() -> None:
    """ETL and analytics for a café chain: nightly branch exports into a PII-free star-schema warehouse."""


class Day(click.ParamType):
    """A day: YYYY-MM-DD, or relative to today (``today``, ``yesterday``, ``today-7``)."""

    name = "date"
    _RELATIVE = re.compile(r"today\s*-\s*(\d{1,4})")

    def convert(self, value, param, ctx):
        if isinstance(value, date):
            return value
        text = value.strip().lower()
        today = date.today()
        if text == "today":
            return today
        if text == "yesterday":
            return today - timedelta(days=1)
        if relative := self._RELATIVE.fullmatch(text):
            return today - timedelta(days=int(relative.group(1)))
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            try:
                day = date.fromisoformat(text)
            except ValueError:
                pass  # 2024-13-01, 2023-02-29
            else:
                if FIRST_DAY <= day <= LAST_DAY:
                    return day
                self.fail(f"{value!r} is too far from any sale: give a day between {FIRST_DAY} and {LAST_DAY}",
                          param, ctx)
        self.fail(f"{value!r} is not a date: write YYYY-MM-DD (e.g. 2024-03-04), today, yesterday or today-7",
                  param, ctx)


DAY = Day()


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


def settings(warehouse=None, key_file=None, customer_keys=None, s3_endpoint_url=None):
    return load_settings(warehouse=warehouse, key_file=key_file, customer_keys=customer_keys,
                         s3_endpoint_url=s3_endpoint_url)


@contextmanager
def progress(label: str, total_files: int):
    """A progress bar on stderr when it is a terminal; a no-op callback otherwise."""
    if not err.is_terminal or total_files == 0:
        yield lambda files, size: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("files"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=total_files)
        yield lambda files, size: bar.advance(task, files)


def show(answer: dict, fmt: str, to_csv: Callable[[dict], str], to_tables: Callable[[dict], object]) -> None:
    """An answer in the ``--format`` asked for: the JSON contract (money with two
    decimals), tidy CSV, or terminal tables."""
    from cafe_etl.analytics import jsonout

    if fmt == "json":
        click.echo(jsonout.dumps(answer))
    elif fmt == "csv":
        click.echo(to_csv(answer), nl=False)
    else:
        out.print(to_tables(answer))


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
