"""`cafe-etl serve` as a service: the command line, access tokens, query limits, a
busy embedded warehouse, and ingestion inside the service with --watch."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.conftest import by_day, free_port, run_cli

from cafe_etl.config import Settings
from cafe_etl.errors import ConfigError, QueryTimeout, ResultTooLarge
from cafe_etl.warehouse import open_warehouse
from cafe_etl.web.app import ServeOptions, create_app
from cafe_etl.web.gateway import Limits
from cafe_etl.web.security import required_token

TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def loaded(generated, tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("service") / "w.duckdb"
    assert run_cli("ingest", generated, "--warehouse", warehouse).code == 0
    return warehouse


def test_serving_beyond_loopback_needs_a_token_or_an_explicit_no_auth(loaded):
    result = run_cli("serve", "--host", "0.0.0.0", "--warehouse", loaded)
    assert result.code == 2 and "--auth-token" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="too short"):
        required_token("0.0.0.0", "short", False)
    assert required_token("0.0.0.0", None, True) is None
    assert required_token("127.0.0.1", None, False) is None
    assert required_token("::1", None, False) is None
    assert required_token("0.0.0.0", TOKEN, False) == TOKEN


def test_a_port_in_use_is_one_clear_line(loaded):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", port, "--warehouse", loaded)
    assert result.code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_the_token_is_checked_on_every_page_and_api_call(loaded):
    app = create_app(Settings(warehouse=str(loaded)), ServeOptions(token=TOKEN))
    with TestClient(app) as client:
        for path in ("/", "/operations", "/api/overview/figures", "/api/ops/runs", "/metrics", "/docs"):
            response = client.get(path)
            assert response.status_code == 401, path
            assert "access token" in response.json()["error"]
        assert client.get("/api/meta", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert client.get("/api/meta", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        assert client.get("/static/dashboard.js").status_code == 200
        first = client.get("/where", params={"token": TOKEN, "branch": "x y"}, follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/where?branch=x+y"
        assert "httponly" in first.headers["set-cookie"].lower()
        assert client.get("/api/meta").status_code == 200  # the cookie now carries it


def test_query_time_and_row_limits(loaded):
    warehouse = open_warehouse(str(loaded))
    with warehouse.reader(time_limit=0.2) as reader:
        started = time.monotonic()
        with pytest.raises(QueryTimeout, match="0.2 s limit"):
            reader.query("SELECT count(*) FROM range(100000000000) a")
        assert time.monotonic() - started < 10
        assert reader.query("SELECT 1")[0][0] == 1  # the connection still works
        with pytest.raises(ResultTooLarge, match="more than 5 rows"):
            reader.query("SELECT * FROM range(10)", max_rows=5)
        assert len(reader.query("SELECT * FROM range(5)", max_rows=5)) == 5


def test_a_query_past_the_limit_is_504(loaded, monkeypatch):
    from cafe_etl.analytics import business

    monkeypatch.setattr(business, "sizes", lambda reader, scope: reader.query(
        "SELECT count(*) FROM range(100000000000) a"))
    app = create_app(Settings(warehouse=str(loaded)), ServeOptions(limits=Limits(time_limit=0.2)))
    with TestClient(app) as client:
        response = client.get("/api/what/sizes")
    assert response.status_code == 504 and "limit" in response.json()["error"]


def test_while_another_process_holds_the_file_answers_are_stale_or_503(loaded, tmp_path):
    warehouse = tmp_path / "w.duckdb"
    shutil.copy(loaded, warehouse)
    app = create_app(Settings(warehouse=str(warehouse)), ServeOptions(limits=Limits(busy_wait=0.5)))
    with TestClient(app) as client:
        fresh = client.get("/api/where/ranking")
        assert fresh.status_code == 200 and "X-Cafe-Etl-Stale" not in fresh.headers
        time.sleep(0.8)  # the reader's anchor lets go of the file
        holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                                   "print('held', flush=True); time.sleep(60)", str(warehouse)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            stale = client.get("/api/where/ranking")
            assert stale.status_code == 200 and stale.headers["X-Cafe-Etl-Stale"] == "1"
            assert stale.json() == fresh.json()
            never_asked = client.get("/api/when/hours")
            assert never_asked.status_code == 503 and never_asked.headers["Retry-After"] == "5"
            assert "in use" in never_asked.json()["error"]
        finally:
            holder.kill()
            holder.wait()
        assert client.get("/api/when/hours").status_code == 200


def test_serve_with_watch_ingests_files_as_they_land(generated, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    days = by_day(generated)
    first, second = list(days)[:2]
    for path in days[first]:
        shutil.copy(path, landing / path.name)
    warehouse = tmp_path / "w.duckdb"
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "cafe_etl.cli", "serve", "--port", str(port), "--warehouse",
                                str(warehouse), "--watch", str(landing), "--interval", "0.5"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"

    def transactions() -> int | None:
        try:
            response = httpx.get(f"{base}/api/overview/figures", params={"from": first, "to": second}, timeout=5)
        except httpx.HTTPError:
            return None
        return response.json()["data"]["figures"]["transactions"]["value"] if response.status_code == 200 else None

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 90
        while transactions() != count:
            assert time.monotonic() < deadline, f"never reached {count} transactions: {transactions()}"
            time.sleep(0.3)

    from tests.conftest import query

    try:
        run_cli("ingest", *days[first], "--warehouse", tmp_path / "truth.duckdb")
        wait_for(query(tmp_path / "truth.duckdb", "SELECT count(*) FROM fact_sale")[0][0])
        for path in days[second]:
            shutil.copy(path, landing / path.name)
        run_cli("ingest", *days[second], "--warehouse", tmp_path / "truth.duckdb")
        wait_for(query(tmp_path / "truth.duckdb", "SELECT count(*) FROM fact_sale")[0][0])
        service = httpx.get(f"{base}/api/ops/service").json()["data"]
        assert service["watch"]["files_ingested"] == len(days[first]) + len(days[second])
        assert "cafe_etl_watch_polls_total" in httpx.get(f"{base}/metrics").text
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0, process.stdout.read()


def test_the_dashboard_keeps_answering_while_another_process_ingests(generated, tmp_path):
    days = by_day(generated)
    dates = list(days)
    warehouse = tmp_path / "w.duckdb"
    assert run_cli("ingest", *days[dates[0]], "--warehouse", warehouse).code == 0
    rest = [path for day in dates[1:] for path in days[day]]
    app = create_app(Settings(warehouse=str(warehouse)))
    with TestClient(app) as client:
        before = client.get("/api/where/ranking", params={"from": dates[0], "to": dates[-1]})
        assert before.status_code == 200
        loader = subprocess.Popen([sys.executable, "-m", "cafe_etl.cli", "ingest", *map(str, rest),
                                   "--warehouse", str(warehouse)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        answers = []
        while loader.poll() is None:
            response = client.get("/api/where/ranking", params={"from": dates[0], "to": dates[-1]})
            answers.append(response.status_code)
            assert response.status_code in (200, 503), response.text
            if response.status_code == 503:
                assert response.headers["Retry-After"]
        out, err = loader.communicate()
        assert loader.returncode == 0, err  # the loader waited out the dashboard's reads
        after = client.get("/api/where/ranking", params={"from": dates[0], "to": dates[-1]})
    assert answers and answers.count(200) >= 1
    total = sum(b["transactions"] for b in after.json()["data"])
    from tests.conftest import query

    assert total == query(warehouse, "SELECT count(*) FROM fact_sale")[0][0] > \
        sum(b["transactions"] for b in before.json()["data"])
