"""Dashboard API latency on a quarter of a large chain: p50 and p95 per endpoint.

Generates (or reuses) 90 days of 200 branches, ingests them into a DuckDB warehouse
(or the PostgreSQL one given), serves the app over real HTTP on 127.0.0.1 with the
answer cache turned off, and asks every endpoint with a mix of filters a manager
would use: the default four weeks, the whole quarter, one month, one branch.

    python bench/api_latency.py                     # DuckDB, data under bench/out/quarter
    python bench/api_latency.py --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import uvicorn

from cafe_etl.config import load_settings
from cafe_etl.web.app import ServeOptions, create_app
from cafe_etl.web.gateway import Limits

ENDPOINTS = ["/api/overview/figures", "/api/overview/daily", "/api/what/products", "/api/what/sizes",
             "/api/what/flavours", "/api/what/mix", "/api/where/ranking", "/api/where/trend",
             "/api/where/best-sellers", "/api/when/heatmap", "/api/when/peak-hours", "/api/when/hours",
             "/api/customers/counts", "/api/customers/rfm", "/api/customers/cohorts", "/api/customers/weekly",
             "/api/customers/repeat", "/api/what/categories", "/api/what/case-variants", "/api/payments/split",
             "/api/payments/daily", "/api/payments/branches", "/api/together/pairs", "/api/together/with",
             "/api/trends/movers", "/api/trends/anomalies", "/api/ops/suspect-days", "/api/ops/files",
             "/api/ops/arrivals", "/api/ops/rejects", "/api/ops/reject-rows", "/api/ops/failed", "/api/ops/runs",
             "/api/ops/service", "/metrics"]
EXTRA = {"/api/together/with": {"name": "Latte", "size": "Regular"}}  # an endpoint's own parameters
START = date(2024, 1, 1)
DAYS = 90


def cli(*args) -> None:
    subprocess.run([sys.executable, "-m", "cafe_etl.cli", *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def prepare(out: Path, warehouse: str) -> None:
    landing = out / "landing"
    if not (landing / "_expected.json").exists():
        print(f"generating 200 branches x {DAYS} days into {landing} ...", flush=True)
        cli("generate", landing, "--branches", 200, "--days", DAYS, "--seed", 5, "--start", START, "--bad-rate", 0.002,
            "--plant-trends")
    print(f"ingesting into {warehouse} ...", flush=True)
    cli("ingest", landing, "--warehouse", warehouse)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def filter_mix(branches: list[str], rng: random.Random) -> list[dict]:
    """The questions asked of every endpoint, in turn."""
    last = START + timedelta(days=DAYS - 1)
    mixes = [{}, {"from": START.isoformat(), "to": last.isoformat()},
             {"from": "2024-02-01", "to": "2024-02-29"}]
    for _ in range(3):
        first = START + timedelta(days=rng.randrange(0, DAYS - 28))
        mixes.append({"from": first.isoformat(), "to": (first + timedelta(days=27)).isoformat(),
                      "branch": rng.choice(branches)})
        mixes.append({"branch": rng.choice(branches)})
    return mixes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/out/quarter"))
    parser.add_argument("--postgres", metavar="URL", help="measure a PostgreSQL warehouse instead of DuckDB")
    parser.add_argument("--rounds", type=int, default=3, help="times each question is asked")
    parser.add_argument("--skip-ingest", action="store_true", help="the warehouse is already loaded")
    parser.add_argument("--only", default="", help="measure only the endpoints starting with this, e.g. /api/customers")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    warehouse = args.postgres or f"duckdb:///{(args.out / 'warehouse.duckdb').resolve()}"
    if not args.skip_ingest:
        prepare(args.out, warehouse)

    app = create_app(load_settings(warehouse=warehouse), ServeOptions(limits=Limits(cache_entries=0)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=60) as client:
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        meta = client.get("/api/meta").json()
        mixes = filter_mix(meta["branches"], random.Random(1))
        client.get("/api/overview/figures")  # warm the file cache once, as a running service would be
        print(f"\n{len(meta['branches'])} branches, {meta['first_day']} .. {meta['last_day']}; "
              f"{len(mixes)} filter sets x {args.rounds} rounds per endpoint, cache off\n")
        print(f"{'endpoint':28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        worst = 0.0
        for endpoint in [e for e in ENDPOINTS if e.startswith(args.only)]:
            times = []
            for _ in range(args.rounds):
                for params in mixes:
                    started = time.perf_counter()
                    asked = {**params, **EXTRA.get(endpoint, {})} if endpoint.startswith("/api/") else None
                    response = client.get(endpoint, params=asked)
                    times.append((time.perf_counter() - started) * 1000)
                    if response.status_code != 200:
                        sys.exit(f"{endpoint} {params}: {response.status_code} {response.text[:200]}")
            times.sort()
            p50 = statistics.median(times)
            p95 = times[max(0, int(round(0.95 * len(times))) - 1)]
            worst = max(worst, p95)
            print(f"{endpoint:28} {p50:8.1f} {p95:8.1f} {times[-1]:8.1f}")
        print(f"\nworst p95: {worst:.1f} ms (target 150 ms)")
    server.should_exit = True


if __name__ == "__main__":
    main()
