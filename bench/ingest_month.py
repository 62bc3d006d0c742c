"""Benchmark: a month of a 200-branch chain, ingested into a fresh warehouse.

Prints wall time, transactions per second and the loader's peak RSS, and the ratio
to DuckDB's own raw ``read_csv`` scan of the same files, measured in the same run.
By default the warehouse is a new DuckDB file; with ``--postgres URL`` it is a new
database (``cafe_bench``) created on that PostgreSQL server and dropped afterwards.
With ``--runs N`` the scan and the ingest (into a new warehouse each time) are
measured N times, alternately, and each figure is the median: on a shared machine
single timings vary by ±10% and more. With ``--yardstick`` each run also times
``bench/single_pass.py`` (a hand-written single-pass SQL transform of the core of the
same work) on the same files, so the pipeline is compared with it on this machine:
both as processes (from starting Python to exit, as the ingest is timed), and against
the yardstick's SQL alone.

    python bench/ingest_month.py [--branches 200] [--days 30] [--seed 1] [--out bench/out]
                                 [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--runs 1]
                                 [--yardstick] [--iceberg] [--executor local|spark] [--spark-master local[2]]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
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


def _tree_rss_kib(root: int) -> int:
    """The resident memory (KiB) of process ``root`` and all its descendants now, from /proc:
    with ``--executor spark`` the Spark JVM and its Python workers are the loader's children."""
    parents, rss = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            status = (stat.parent / "statm").read_text().split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        rss[pid] = int(status[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return sum(rss.get(pid, 0) for pid in tree)


class TreePeak:
    """Samples a process tree's resident memory every 0.2 s; ``peak`` is the largest sum seen."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._pid, self._done = pid, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.2):
            self.peak = max(self.peak, _tree_rss_kib(self._pid))

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def timed(command: list[str]) -> tuple[float, str, int]:
    """Run ``command``; its wall time, its output and its own peak RSS (KiB). The child is
    reaped with wait4, which reports that child's resources alone. The peak of its whole
    process tree, sampled, is left in ``timed.tree_peak_kib``."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        tree = TreePeak(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        timed.tree_peak_kib = tree.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            sys.exit(f"{command[0]} failed: {err.read()}")
        return wall, out.read(), usage.ru_maxrss


def ingest(folder: Path, warehouse: str, executor: list[str]) -> tuple[float, dict, int]:
    wall, out, peak_kib = timed([str(CLI), "ingest", str(folder), "--warehouse", str(warehouse), "--json",
                                 *executor])
    return wall, json.loads(out), peak_kib


def single_pass(folder: Path, out: Path) -> tuple[float, float, int]:
    """The yardstick's process wall time (like the ingest's, from starting Python to exit), its
    own time (its SQL alone, without starting Python and importing DuckDB), and peak RSS (KiB)."""
    wall, text, peak_kib = timed([sys.executable, str(ROOT / "bench" / "single_pass.py"), str(folder),
                                  "--out", str(out / "single-pass.duckdb")])
    return wall, float(text.split("single pass: ", 1)[1].split(" s,", 1)[0]), peak_kib


def fresh_warehouse(args: argparse.Namespace) -> str:
    if args.postgres:
        return fresh_postgres(args.postgres)
    if args.iceberg:
        lake = (args.out / "bench-lake").resolve()
        shutil.rmtree(lake, ignore_errors=True)
        return f"iceberg:///{lake}"
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
    parser.add_argument("--iceberg", action="store_true",
                        help="load into a new Iceberg warehouse (iceberg:///bench/out/bench-lake) instead")
    parser.add_argument("--runs", type=int, default=1, help="measure this many times; figures are medians")
    parser.add_argument("--executor", choices=["local", "spark"], default="local",
                        help="where the ingest transforms its batches (spark: pip install -e '.[spark]')")
    parser.add_argument("--spark-master", default="local[2]", help="with --executor spark [local[2]]")
    parser.add_argument("--yardstick", action="store_true",
                        help="also time bench/single_pass.py on the same files in each run")
    args = parser.parse_args()

    folder = landing_folder(args.out, args.branches, args.days, args.seed)
    files = sorted(str(p) for p in folder.glob("*.csv"))
    size = sum(os.path.getsize(f) for f in files)
    raw_scan(files)  # warm the page cache, so both measurements read from memory
    env_key = args.out / "bench-customer-key"
    os.environ.setdefault("CAFE_ETL_KEY_FILE", str(env_key))
    executor = ["--executor", args.executor] + (["--spark-master", args.spark_master] if args.executor == "spark"
                                                else [])
    scans, walls, peaks, tree_peaks, yardsticks, yardstick_sql, yardstick_peaks = [], [], [], [], [], [], []
    for run in range(1, args.runs + 1):
        scan, rows = raw_scan(files)
        try:
            wall, summary, peak_kib = ingest(folder, fresh_warehouse(args), executor)
            tree_peaks.append(timed.tree_peak_kib)
        finally:
            if args.postgres:
                drop_postgres(args.postgres)
        scans.append(scan)
        walls.append(wall)
        peaks.append(peak_kib)
        line = f"run {run}: ingest {wall:.2f} s, raw scan {scan:.2f} s, ratio {wall / scan:.1f}x"
        if args.yardstick:
            yard, sql, yard_kib = single_pass(folder, args.out)
            yardsticks.append(yard)
            yardstick_sql.append(sql)
            yardstick_peaks.append(yard_kib)
            line += f", single pass {yard:.2f} s ({yard / scan:.1f}x; its SQL {sql:.2f} s)"
        if args.runs > 1:
            print(line)
    wall, scan = statistics.median(walls), statistics.median(scans)
    ratio = statistics.median(w / s for w, s in zip(walls, scans, strict=True))
    peak_kib = max(peaks)
    tx = summary["rows"]["loaded"]
    kind = "PostgreSQL" if args.postgres else "Iceberg (SQL catalog, local files)" if args.iceberg else "DuckDB file"
    print(f"warehouse             {kind}")
    print(f"executor              {args.executor}"
          f"{f' ({args.spark_master})' if args.executor == 'spark' else ''}")
    print(f"files                 {len(files):,} ({size / 1e6:,.0f} MB)")
    print(f"transactions loaded   {tx:,} (raw scan read {rows:,} rows)")
    print(f"ingest wall time      {wall:.2f} s")
    print(f"throughput            {tx / wall:,.0f} transactions/s")
    print(f"loader peak RSS       {peak_kib / 1024:,.0f} MiB")
    print(f"process tree peak RSS {max(tree_peaks) / 1024:,.0f} MiB (sampled every 0.2 s; with Spark: "
          "the JVM and its Python workers too)")
    print(f"raw read_csv scan     {scan:.2f} s")
    print(f"ingest / raw scan     {ratio:.1f}x")
    if yardsticks:
        yard = statistics.median(yardsticks)
        yard_ratio = statistics.median(y / s for y, s in zip(yardsticks, scans, strict=True))
        sql = statistics.median(yardstick_sql)
        sql_ratio = statistics.median(y / s for y, s in zip(yardstick_sql, scans, strict=True))
        print(f"single pass           {yard:.2f} s ({yard_ratio:.1f}x the raw scan), "
              f"peak RSS {max(yardstick_peaks) / 1024:,.0f} MiB; its SQL alone {sql:.2f} s ({sql_ratio:.1f}x)")
        print(f"ingest / single pass  {statistics.median(w / y for w, y in zip(walls, yardsticks, strict=True)):.2f} "
              f"(process walls; against its SQL alone "
              f"{statistics.median(w / y for w, y in zip(walls, yardstick_sql, strict=True)):.2f})")


if __name__ == "__main__":
    main()
