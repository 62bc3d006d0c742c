"""Commands that answer the business beyond the report (DESIGN §11): customers, together,
trends; and the product categories behind the report's rollups."""

from __future__ import annotations

import os
from pathlib import Path

import click

from cafe_etl.cli.common import DAY, EXIT_USAGE, err, fail, handle_errors, main, settings, show, warehouse_option

FROM = click.option("--from", "first", type=DAY, default=None,
                    help="First day: YYYY-MM-DD, today, yesterday or today-N [default: 27 days before --to]")
TO = click.option("--to", "last", type=DAY, default=None,
                  help="Last day: YYYY-MM-DD, today, yesterday or today-N [default: the last day with sales]")
BRANCH = click.option("--branch", default=None, help="One branch, by name (any case)")
FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
                      show_default=True)


@main.command()
@FROM
@TO
@BRANCH
@FORMAT
@click.option("--list", "segment", default=None, metavar="SEGMENT",
              help='Write the target list of one segment (e.g. "At Risk"): customer keys, scores, sales')
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The target list's CSV file [default: standard output]")
@warehouse_option
@handle_errors
def customers(first, last, branch, fmt, segment, out_file, warehouse) -> None:
    """Whom to target: RFM segments, sales per customer, weekly cohorts, target lists."""
    from cafe_etl.analytics import customer_render
    from cafe_etl.analytics import customers as insight
    from cafe_etl.analytics.report import Filters
    from cafe_etl.warehouse import open_warehouse

    if out_file is not None and segment is None:
        fail('--out names the target list\'s file: give the segment too, e.g. --list "At Risk"', EXIT_USAGE)
    chosen = insight.segment_named(segment) if segment is not None else None
    filters = Filters(first, last, branch)
    with open_warehouse(settings(warehouse).warehouse).reader() as reader:
        if chosen is None:
            answer = insight.build(reader, filters)
        else:
            scope, rows = insight.target_list(reader, filters, chosen)
    if chosen is None:
        show(answer, fmt, customer_render.to_csv, customer_render.tables)
        return
    text = customer_render.target_csv(rows)
    period = f"{scope.first} to {scope.last}" if scope.first else "an empty warehouse"
    if out_file is None:
        click.echo(text, nl=False)
        return
    _write_private(out_file, text)
    err.print(f"wrote {len(rows):,} {chosen.name} customers ({period}) to {out_file}")


@main.command()
@FROM
@TO
@BRANCH
@click.option("--min-baskets", type=click.IntRange(min=1), default=30, show_default=True,
              help="Leave out pairs bought together in fewer sales")
@FORMAT
@warehouse_option
@handle_errors
def together(first, last, branch, min_baskets, fmt, warehouse) -> None:
    """What sells together: every pair of products in the same sale, with lift and significance."""
    from cafe_etl.analytics import together as insight
    from cafe_etl.analytics import together_render
    from cafe_etl.analytics.report import Filters
    from cafe_etl.warehouse import open_warehouse

    with open_warehouse(settings(warehouse).warehouse).reader() as reader:
        answer = insight.build(reader, Filters(first, last, branch), min_baskets)
    show(answer, fmt, together_render.to_csv, together_render.table)


@main.command()
@click.option("--to", "last", type=DAY, default=None,
              help="The week's last day: YYYY-MM-DD, today, yesterday or today-N [default: the last day with sales]")
@BRANCH
@click.option("--min-change", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="A mover's least change against its baseline, in percent")
@FORMAT
@warehouse_option
@handle_errors
def trends(last, branch, min_change, fmt, warehouse) -> None:
    """What is changing: movers of the last 7 days against the 4 weeks before, and unusual days."""
    from cafe_etl.analytics import trends as insight
    from cafe_etl.analytics import trends_render
    from cafe_etl.warehouse import open_warehouse

    with open_warehouse(settings(warehouse).warehouse).reader() as reader:
        answer = insight.build(reader, last, branch, min_change)
    show(answer, fmt, trends_render.to_csv, trends_render.tables)


@main.command()
@click.option("--file", "mapping_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A categories file [default: $CAFE_ETL_CATEGORIES, else the packaged one]")
@click.option("--apply", is_flag=True, help="Put every product of the warehouse in its category now")
@FORMAT
@warehouse_option
@handle_errors
def categories(mapping_file, apply, fmt, warehouse) -> None:
    """Each product's category by the categories file, and the one the warehouse holds."""
    from cafe_etl import categories as mapping_of
    from cafe_etl.analytics import categories_render
    from cafe_etl.engine import EnginePool
    from cafe_etl.warehouse import open_warehouse

    chosen = settings(warehouse)
    mapping = mapping_of.load(mapping_file)
    store = open_warehouse(chosen.warehouse)
    moved = None
    if apply:
        with EnginePool(workers=1, threads=1, memory_limit=chosen.memory_limit) as pool, \
                store.load_session(pool) as session:
            session.categories = mapping
            moved = session.recategorise()
    with store.reader() as reader:
        answer = categories_render.build(reader, mapping, moved)
    show(answer, fmt, categories_render.to_csv, categories_render.table)


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all, readable by its owner only: the keys are
    pseudonyms of people, for a CRM that holds the same secret."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"cannot write {path}: {exc.strerror}", EXIT_USAGE)
