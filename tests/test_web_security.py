"""The dashboard cannot be exhausted or tricked: bounded periods and answers, edge
dates, host names, sessions, redirects, security headers, and no secret in any
message."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.conftest import SAMPLES, free_port, run_cli

from cafe_etl.config import Settings
from cafe_etl.errors import Overloaded, redact
from cafe_etl.keys import load_or_create_key
from cafe_etl.warehouse import open_warehouse
from cafe_etl.web.app import ServeOptions, create_app
from cafe_etl.web.gateway import Gateway, Limits
from cafe_etl.web.security import COOKIE, SESSION_SECONDS, allowed_hosts, new_session, valid_session

TOKEN = "s3cret-token-0123456789"
PASSWORD = "Pw-d0nt-sh0w-me"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("security") / "w.duckdb"
    assert run_cli("ingest", SAMPLES / "canonical", "--warehouse", warehouse).code == 0
    return warehouse


@pytest.fixture(scope="module")
def client(loaded):
    with TestClient(create_app(Settings(warehouse=str(loaded)))) as client:
        yield client


def _dated_routes(app) -> list[str]:
    """Every API route that takes a period, from the service's own OpenAPI description."""
    return [path for path, methods in app.openapi()["paths"].items()
            if any(p["name"] == "from" for p in methods.get("get", {}).get("parameters", []))]


PAGES = ("/", "/what", "/where", "/when", "/payments", "/customers", "/trends", "/operations")


# A route's own required parameters.
REQUIRED = {"/api/customers/list": {"segment": "At Risk"}, "/api/together/with": {"name": "Latte"}}


@pytest.mark.parametrize("params", [{"to": "0001-01-01"}, {"from": "0001-01-01"}, {"to": "9999-12-31"},
                                    {"from": "0001-01-10"}, {"from": "1990-01-01"}, {"from": "2021-01-01",
                                                                                      "to": "2024-12-31"}])
def test_edge_dates_and_long_periods_are_400_with_a_sentence_on_every_route(client, params):
    routes = _dated_routes(client.app)
    assert len(routes) >= 15
    for path in (*routes, *PAGES):
        response = client.get(path, params=params | REQUIRED.get(path, {}))
        assert response.status_code == 400, (path, params, response.status_code)
        text = response.json()["error"] if path.startswith("/api/") else response.text
        assert "between 1900-01-01 and 2999-12-31" in text or "longer than 1098 days" in text, (path, text[:200])


def test_a_period_within_the_cap_is_answered_after_defaults_are_filled_in(client):
    assert client.get("/api/where/trend", params={"from": "2021-06-01"}).status_code == 200  # to: the last sale
    assert client.get("/api/where/trend", params={"to": "2021-09-09"}).status_code == 200  # from: 28 days before


def test_the_time_limit_covers_the_whole_answer_not_only_its_queries(loaded, monkeypatch):
    from cafe_etl.analytics import business

    def slow(reader, scope):
        rows = reader.query("SELECT 1")
        time.sleep(0.6)  # Python work after the query, past the limit
        return rows

    monkeypatch.setattr(business, "sizes", slow)
    app = create_app(Settings(warehouse=str(loaded)), ServeOptions(limits=Limits(time_limit=0.3)))
    with TestClient(app) as client:
        response = client.get("/api/what/sizes")
        assert response.status_code == 504 and "0.3 s limit" in response.json()["error"]
        assert client.get("/api/what/flavours").status_code == 200


def test_the_answer_cache_is_bounded_in_bytes(loaded):
    gateway = Gateway(open_warehouse(str(loaded)), Limits(cache_bytes=64_000))
    for n in range(60):
        gateway.read(lambda reader, n=n: ["x" * 2_000, n], key=("answer", n))
    assert 0 < gateway.cached_bytes <= 64_000
    gateway.read(lambda reader: "y" * 20_000, key="too big")  # over an eighth of the budget: not kept
    assert gateway.cached_bytes <= 64_000


def test_too_many_heavy_requests_at_once_are_503_with_retry_after(loaded):
    app = create_app(Settings(warehouse=str(loaded)), ServeOptions(limits=Limits(heavy_requests=1, queue_wait=0.2)))
    gateway: Gateway = app.state.gateway
    inside, release = threading.Event(), threading.Event()

    def hold(reader):
        inside.set()
        release.wait(10)
        return 1

    holder = threading.Thread(target=gateway.read, args=(hold,))
    holder.start()
    try:
        assert inside.wait(10)
        with pytest.raises(Overloaded):
            gateway.read(lambda reader: 2)
        with TestClient(app) as client:
            response = client.get("/api/what/sizes")
        assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    finally:
        release.set()
        holder.join()
    assert gateway.read(lambda reader: 3).value == 3  # the turn is free again


def test_readyz_says_ready_or_not_and_nothing_else(client, tmp_path):
    assert client.get("/readyz").json() == {"status": "ready"}
    with TestClient(create_app(Settings(warehouse=str(tmp_path / "none.duckdb")))) as missing:
        response = missing.get("/readyz")
    assert response.status_code == 503 and response.json() == {"status": "not ready"}


def test_a_loopback_service_answers_only_to_loopback_names(loaded):
    app = create_app(Settings(warehouse=str(loaded)), ServeOptions(allowed_hosts=allowed_hosts("127.0.0.1", ())))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/api/meta").status_code == 200
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
            assert client.get("/api/meta", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", ""):
            response = client.get("/", headers={"Host": host})
            assert response.status_code == 400, host  # a DNS-rebinding page gets nothing
    assert allowed_hosts("0.0.0.0", ()) is None  # elsewhere the token guards it
    assert allowed_hosts("0.0.0.0", ("dash.example",)) == {"dash.example", "0.0.0.0"}


def test_the_session_cookie_is_a_signed_expiry_not_the_token(loaded):
    app = create_app(Settings(warehouse=str(loaded)), ServeOptions(token=TOKEN))
    with TestClient(app) as client:
        first = client.get("/where", params={"token": TOKEN}, follow_redirects=False)
        cookie = first.cookies[COOKIE]
        assert TOKEN not in cookie and TOKEN not in first.headers["set-cookie"]
        assert f"Max-Age={SESSION_SECONDS}" in first.headers["set-cookie"]
        assert client.get("/api/meta").status_code == 200
        client.cookies.set(COOKIE, new_session(TOKEN, now=time.time() - SESSION_SECONDS - 1))  # expired
        assert client.get("/api/meta").status_code == 401
        client.cookies.set(COOKIE, new_session("another-token-0123456789"))
        assert client.get("/api/meta").status_code == 401
    assert valid_session(TOKEN, new_session(TOKEN)) and not valid_session(TOKEN, "99999999999.forged")


@pytest.mark.parametrize("path", ["//evil.example/x", "/\\evil.example/x", "///evil.example"])
def test_the_token_redirect_stays_on_this_site(loaded, path):
    app = create_app(Settings(warehouse=str(loaded)), ServeOptions(token=TOKEN))
    with TestClient(app) as client:
        response = client.get(f"http://testserver{path}?token={TOKEN}", follow_redirects=False)
    location = response.headers["location"]
    assert response.status_code == 303 and location.startswith("/") and not location.startswith(("//", "/\\"))


def test_every_response_carries_security_headers(client):
    for path in ("/", "/operations", "/api/meta", "/metrics", "/healthz", "/nope"):
        headers = client.get(path).headers
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY", path
        assert headers["Referrer-Policy"] == "no-referrer", path
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp, path


BROKEN_URLS = [f"postgresql://etl:{PASSWORD}@[127.0.0.1:5432/test", f"postgresq://etl:{PASSWORD}@127.0.0.1/test",
               f"duckdb://user:{PASSWORD}@host/w.duckdb", f"postgresql://etl:{PASSWORD}%zz@127.0.0.1/test",
               f"postgresql://etl:{PASSWORD}@127.0.0.1:1/test", f"host=127.0.0.1 port=1 password={PASSWORD}"]


@pytest.mark.parametrize("url", BROKEN_URLS)
def test_no_command_prints_the_warehouse_password(url, tmp_path):
    for command in (["ingest", SAMPLES / "canonical"], ["report"], ["status"], ["rejects"], ["replay"], ["audit"]):
        result = run_cli(*command, "--warehouse", url, cwd=tmp_path, timeout=60)
        assert result.code != 0, command
        assert PASSWORD not in result.stdout + result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_watch_outage_lines_do_not_print_the_password(tmp_path, log_format):
    landing = tmp_path / "landing"
    landing.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "cafe_etl.cli", "watch", str(landing), "--interval", "0.2", "--log-format", log_format,
         "--warehouse", f"postgresql://etl:{PASSWORD}@127.0.0.1:1/test"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (landing / "leeds_01-01-2020_09-00-00.csv").write_bytes(
        (SAMPLES / "canonical" / "leeds_01-01-2020_09-00-00.csv").read_bytes())
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert "outage" in err  # the lines are there ...
    assert PASSWORD not in out + err  # ... without the password


def test_redact_takes_passwords_out_of_urls_and_connection_strings():
    assert redact("postgresql://etl:pw@db/x and postgres://a:b@[::1]:5/y") == (
        "postgresql://etl:***@db/x and postgres://a:***@[::1]:5/y")
    assert redact("host=db password=pw dbname=x; ?password=pw&user=u") == (
        "host=db password=*** dbname=x; ?password=***&user=u")
    assert redact("postgresql://etl@db/x") == "postgresql://etl@db/x"


def test_access_log_logs_each_request(loaded):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "cafe_etl.cli", "serve", "--port", str(port), "--access-log",
                                "--warehouse", str(loaded)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        httpx.get(f"http://127.0.0.1:{port}/api/meta")
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert '"GET /api/meta HTTP/1.1" 200' in out + err


def test_a_token_on_the_command_line_is_warned_about_and_a_token_file_is_not(loaded, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    for options, warned in ((["--auth-token", TOKEN], True), (["--auth-token-file", token_file], False)):
        process = subprocess.Popen([sys.executable, "-m", "cafe_etl.cli", "serve", "--host", "127.0.0.1", "--port",
                                    str(port), *map(str, options), "--warehouse", str(loaded)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(100):
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/api/meta",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            assert response.status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
        assert ("shows in `ps`" in err) is warned, err


def test_key_folders_and_the_warehouse_file_are_private(tmp_path):
    key = tmp_path / "a" / "b" / "c" / "customer-key"
    load_or_create_key(key)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    warehouse = tmp_path / "data" / "w.duckdb"
    old = os.umask(0o022)
    try:
        assert run_cli("ingest", SAMPLES / "canonical", "--warehouse", warehouse).code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(warehouse.stat().st_mode) == 0o600
    assert stat.S_IMODE(warehouse.parent.stat().st_mode) == 0o700
