"""Benchmark: `cafe-etl customers`, `together` and `trends` on a quarter of a 200-branch chain.

Uses (or makes) the quarter that ``bench/api_latency.py`` measures: 90 days of 200
branches (about 7 million sales and a million customers), ingested into a DuckDB file
under bench/out/quarter, and with ``--postgres URL`` into that PostgreSQL database
too. Each scope is answered ``--runs`` times in this process, through the same call
the CLI makes; the median and the slowest are printed, with the whole command's wall
time (a new process: Python's start included) once per scope.

    python bench/insights_quarter.py [--postgres postgresql://postgres@127.0.0.1:5432/test] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_latency import DAYS, START, prepare  # noqa: E402 - the quarter is api_latency's

from cafe_etl.analytics import customers, together, trends  # noqa: E402
from cafe_etl.analytics.report import Filters  # noqa: E402
from cafe_etl.warehouse import open_warehouse  # noqa: E402

CLI = Path(sys.executable).parent / "cafe-etl"


def scopes(last: str, branch: str) -> dict[str, list[str]]:
    return {"default: the last 28 days": [], "the whole quarter": ["--from", START.isoformat(), "--to", last],
            "one branch, the quarter": ["--from", START.isoformat(), "--to", last, "--branch", branch]}


def trend_scopes(branch: str) -> dict[str, list[str]]:
    return {"default: the last week": [], "one branch, the last week": ["--branch", branch]}


def _trends(reader, filters: Filters) -> dict:
    return trends.build(reader, filters.last, filters.branch)


def _filters(args: list[str]) -> Filters:
    options = dict(zip(args[::2], args[1::2], strict=True))
    from datetime import date

    day = lambda text: date.fromisoformat(text) if text else None  # noqa: E731
    return Filters(day(options.get("--from")), day(options.get("--to")), options.get("--branch"))


def measure(warehouse: str, runs: int) -> None:
    store = open_warehouse(warehouse)
    with store.reader() as reader:
        sales = reader.scalar("SELECT count(*) FROM fact_sale")
        people = reader.scalar("SELECT count(DISTINCT customer_key) FROM fact_sale")
        last = reader.scalar("SELECT max(date) FROM dim_date").isoformat()
        branch = reader.scalar("SELECT min(name) FROM dim_branch")
    print(f"\n{store.describe()}: {sales:,} sales, {people:,} customers")
    commands = (("customers", customers.build, scopes(last, branch)),
                ("together", together.build, scopes(last, branch)),
                ("trends", _trends, trend_scopes(branch)))
    for command, build, chosen in commands:
        print(f"\n{command:28} {'median s':>9} {'max s':>7} {'CLI wall s':>11}")
        for label, args in chosen.items():
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                with store.reader() as reader:
                    build(reader, _filters(args))
                times.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run([str(CLI), command, "--warehouse", warehouse, "--format", "json", *args], check=True,
                           stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - started
            print(f"{label:28} {statistics.median(times):9.2f} {max(times):7.2f} {wall:11.2f}")


def planted_found(warehouse: str, landing: Path) -> None:
    """How many of the generator's planted changes `trends` finds, and what else it flags."""
    expected = json.loads((landing / "_expected.json").read_text()).get("planted")
    if not expected:
        return
    with open_warehouse(warehouse).reader() as reader:
        answer = trends.build(reader)
    down = {m["branch"] for m in answer["movers"] if m["kind"] == "branch" and m["change_pct"] < 0}
    product = expected["product_up"]
    up = any(m["kind"] == "product" and (m["size"], m["name"], m["flavour"]) ==
             (product["size"], product["name"], product["flavour"]) for m in answer["movers"])
    days = {(d["branch"], d["date"]) for d in expected["short_days"] + expected["busy_days"]}
    flagged = {(a["branch"], a["date"]) for a in answer["anomalies"]}
    weaker = set(expected["branches_down"])
    false_days = {cell for cell in flagged - days if cell[0] not in weaker}
    others = [m for m in answer["movers"] if (m["kind"] == "branch" and m["branch"] not in weaker)
              or (m["kind"] == "product" and m["name"] != product["name"])]
    print(f"\ntrends, planted: branches down {len(down & weaker)}/{len(weaker)}, product up {int(up)}/1, "
          f"days {len(flagged & days)}/{len(days)}; flagged beyond them: {len(others)} mover(s), "
          f"{len(false_days)} day(s) of {len(answer['anomalies'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/out/quarter"))
    parser.add_argument("--postgres", metavar="URL", help="also measure this PostgreSQL warehouse")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-ingest", action="store_true", help="the warehouses are already loaded")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    duck = f"duckdb:///{(args.out / 'warehouse.duckdb').resolve()}"
    warehouses = [duck] + ([args.postgres] if args.postgres else [])
    if not args.skip_ingest:
        for warehouse in warehouses:
            prepare(args.out, warehouse)
    print(f"a quarter: {DAYS} days of 200 branches from {START}")
    for warehouse in warehouses:
        measure(warehouse, args.runs)
        planted_found(warehouse, args.out / "landing")


if __name__ == "__main__":
    main()
