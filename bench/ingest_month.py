"""Benchmark: a month of a 200-branch chain, ingested into a fresh warehouse.

Prints wall time, transactions per second and the loader's peak RSS, and the ratio
to DuckDB's own raw ``read_csv`` scan of the same files, measured in the same run.
By default the warehouse is a new DuckDB file; with ``--postgres URL`` it is a new
database (``cafe_bench``) created on that PostgreSQL server and dropped afterwards.
With ``--runs N`` the scan and the ingest (into a new warehouse each time) are
measured N times, alternately, and each figure is the median: on a shared machine
single timings vary by ±10%.

    python bench/ingest_month.py [--branches 200] [--days 30] [--seed 1] [--out bench/out]
                                 [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "cafe-etl"


def landing_folder(out: Path, branches: int, days: int, seed: int) -> Path:
    """The generated month, reused when it is already there with the same parameters."""
    folder = out / f"month-{branches}x{days}-seed{seed}"
    expected = folder / "_expected.json"
    if expected.exists():
        meta = json.loads(expected.read_text())["generator"]
        if (meta["branches"], meta["days"], meta["seed"]) == (branches, days, seed):
            return folder
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([str(CLI), "generate", str(folder), "--branches", str(branches), "--days", str(days),
                    "--seed", str(seed)], check=True)
    print(f"generated in {time.perf_counter() - started:.1f} s")
    return folder


def raw_scan(files: list[str]) -> tuple[float, int]:
    """DuckDB reading every field of every file with its own CSV reader, nothing else."""
    con = duckdb.connect(config={"threads": os.cpu_count() or 1})
    con.execute("SET enable_progress_bar = false")
    columns = {f"c{i}": "VARCHAR" for i in range(1, 8)}
    touch = " + ".join(f"coalesce(length(c{i}), 0)" for i in range(1, 8))
    sql = (f"SELECT count(*), sum({touch}) FROM read_csv($files, columns = $columns, header = false, "
           "auto_detect = false, delim = ',', quote = '\"', null_padding = true, strict_mode = false)")
    started = time.perf_counter()
    rows, _ = con.execute(sql, {"files": files, "columns": columns}).fetchone()
    return time.perf_counter() - started, rows


def fresh_postgres(admin_url: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as con:
        con.execute("DROP DATABASE IF EXISTS cafe_bench WITH (FORCE)")
        con.execute("CREATE DATABASE cafe_bench")
    return admin_url.rsplit("/", 1)[0] + "/cafe_bench"


def drop_postgres(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as con:
        con.execute("DROP DATABASE IF EXISTS cafe_bench WITH (FORCE)")


def ingest(folder: Path, warehouse: str) -> tuple[float, dict, int]:
    started = time.perf_counter()
    proc = subprocess.run([str(CLI), "ingest", str(folder), "--warehouse", str(warehouse), "--json"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"ingest failed: {proc.stderr}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
    return wall, json.loads(proc.stdout), peak_kib


def fresh_warehouse(args: argparse.Namespace) -> str:
    if args.postgres:
        return fresh_postgres(args.postgres)
    path = args.out / "bench-warehouse.duckdb"
    path.unlink(missing_ok=True)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--postgres", metavar="ADMIN_URL", default=None,
                        help="load into a new database on this PostgreSQL server instead of a DuckDB file")
    parser.add_argument("--runs", type=int, default=1, help="measure this many times; figures are medians")
    args = parser.parse_args()

    folder = landing_folder(args.out, args.branches, args.days, args.seed)
    files = sorted(str(p) for p in folder.glob("*.csv"))
    size = sum(os.path.getsize(f) for f in files)
    raw_scan(files)  # warm the page cache, so both measurements read from memory
    env_key = args.out / "bench-customer-key"
    os.environ.setdefault("CAFE_ETL_KEY_FILE", str(env_key))
    scans, walls = [], []
    for run in range(1, args.runs + 1):
        scan, rows = raw_scan(files)
        try:
            wall, summary, peak_kib = ingest(folder, fresh_warehouse(args))
        finally:
            if args.postgres:
                drop_postgres(args.postgres)
        scans.append(scan)
        walls.append(wall)
        if args.runs > 1:
            print(f"run {run}: ingest {wall:.2f} s, raw scan {scan:.2f} s, ratio {wall / scan:.1f}x")
    wall, scan = statistics.median(walls), statistics.median(scans)
    ratio = statistics.median(w / s for w, s in zip(walls, scans, strict=True))
    tx = summary["rows"]["loaded"]
    print(f"warehouse             {'PostgreSQL' if args.postgres else 'DuckDB file'}")
    print(f"files                 {len(files):,} ({size / 1e6:,.0f} MB)")
    print(f"transactions loaded   {tx:,} (raw scan read {rows:,} rows)")
    print(f"ingest wall time      {wall:.2f} s")
    print(f"throughput            {tx / wall:,.0f} transactions/s")
    print(f"loader peak RSS       {peak_kib / 1024:,.0f} MiB")
    print(f"raw read_csv scan     {scan:.2f} s")
    print(f"ingest / raw scan     {ratio:.1f}x")


if __name__ == "__main__":
    main()
