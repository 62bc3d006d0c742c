"""Peak memory of `ingest` on the two shapes that stress it: one huge branch file, and
a landing folder of very many small ones. The target is a peak RSS of at most 1 GiB.

    python bench/memory_bound.py                    # a 2 GB file, then 50,000 small files
    python bench/memory_bound.py --size-gb 0.5 --files 5000     # a quicker look

Each ingest runs in its own process into a fresh DuckDB file; the figures are that
process's wall time and peak resident set size (getrusage of the child).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

MENU = ["Large Latte - 2.45", "Regular Flavoured iced latte - Hazelnut - 2.75", "Regular Americano - 1.95",
        "Large Chai latte - 2.60", "Regular Speciality Tea - Camomile - 1.30"]


def basket(n: int) -> tuple[str, str]:
    items = [MENU[(n + k) % len(MENU)] for k in range(1 + n % 3)]
    total = sum(float(i.rsplit(" - ", 1)[1]) for i in items)
    return '"' + ", ".join(items) + '"', f"{total:.2f}"


def huge_file(path: Path, size_bytes: int) -> int:
    """One branch's file of distinct sales, written in blocks; its number of rows."""
    rows = 0
    with path.open("w", newline="") as out:
        block = []
        while out.tell() < size_bytes:
            for _ in range(10_000):
                items, total = basket(rows)
                minute = rows % (12 * 60)
                block.append(f"05/03/2024 {8 + minute // 60:02d}:{minute % 60:02d},Big Branch,"
                             f"Customer {rows},{items},{total},CARD,4{rows:015d}\n")
                rows += 1
            out.write("".join(block))
            block.clear()
    return rows


def many_files(folder: Path, count: int) -> int:
    """``count`` small files: branch-days of three sales each; the number of rows."""
    folder.mkdir(parents=True, exist_ok=True)
    branches = max(1, count // 100)
    rows = 0
    for n in range(count):
        branch, day = n % branches, date(2024, 1, 1) + timedelta(days=n // branches)
        name = f"Branch {branch}"
        lines = []
        for k in range(3):
            items, total = basket(n + k)
            lines.append(f"{day:%d/%m/%Y} 09:{k:02d},{name},Customer {n}-{k},{items},{total},CASH,\n")
            rows += 1
        (folder / f"branch_{branch}_{day:%d-%m-%Y}_09-00-00.csv").write_text("".join(lines))
    return rows


def measure(label: str, source: Path, out: Path, rows: int) -> float:
    warehouse = out / f"{label}.duckdb"
    warehouse.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cafe_etl.cli", "ingest", str(source), "--warehouse",
                           str(warehouse), "--json"], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode not in (0, 1):
        sys.exit(f"{label}: ingest failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    summary = json.loads(done.stdout)
    failed = [f for f in summary["file_results"] if f["outcome"] == "failed"]
    if failed:
        print(f"  {len(failed)} file(s) failed, e.g. {failed[0]['error']}")
    rows = summary["rows"]["loaded"]
    if peak <= before:
        print(f"  (the peak of this run is below an earlier run's {before / 1024:.0f} MiB)")
    print(f"{label:12} {rows:>12,} rows loaded {seconds:8.1f} s {rows / seconds:>10,.0f} rows/s  "
          f"peak RSS {peak / 1024:6.0f} MiB")
    return peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/out/memory"))
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of the single file")
    parser.add_argument("--files", type=int, default=50_000, help="number of small files")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    # The many-files run first: a child's peak RSS is a high-water mark over all children.
    folder = args.out / f"many-{args.files}"
    if not folder.exists():
        print(f"writing {args.files:,} small files ...", flush=True)
    rows = many_files(folder, args.files) if not folder.exists() else 3 * args.files
    many = measure("many files", folder, args.out, rows)

    big = args.out / f"big-{args.size_gb:g}gb.csv"
    if not big.exists():
        print(f"writing a {args.size_gb:g} GB branch file ...", flush=True)
        rows = huge_file(big, int(args.size_gb * 1024**3))
        big.with_suffix(".rows").write_text(str(rows))
    rows = int(big.with_suffix(".rows").read_text())
    single = measure("one file", big, args.out, rows)
    print(f"\npeak RSS: {max(many, single):.0f} MiB (target 1024 MiB)")


if __name__ == "__main__":
    main()
