"""Shared fixtures: an isolated customer-key secret, the real CLI, sample and generated data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = FIXTURES / "samples"
# The installed console script, as a user runs it.
_SCRIPT = Path(sys.executable).parent / "cafe-etl"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cafe_etl.cli"]


def pytest_addoption(parser):
    parser.addoption("--fuzz-examples", type=int, default=FUZZ_EXAMPLES,
                     help=f"spoilt-file examples per backend for test_fuzz_files [{FUZZ_EXAMPLES}; more is a soak]")


FUZZ_EXAMPLES = 30


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory):
    """Every test process (and CLI subprocess) uses a throwaway customer-key secret, and
    dummy AWS credentials: nothing reaches AWS, and botocore never waits on an
    instance-metadata lookup, whichever S3 test runs first or alone."""
    key = tmp_path_factory.mktemp("key") / "customer-key"
    os.environ["CAFE_ETL_KEY_FILE"] = str(key)
    os.environ.pop("CAFE_ETL_WAREHOUSE", None)
    os.environ.update(S3_CREDENTIALS)
    yield key


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> Result:
    """Run the real ``cafe-etl`` command line in a subprocess."""
    proc = subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def warehouse(tmp_path) -> Path:
    return tmp_path / "warehouse.duckdb"


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Path:
    """A small chain with bad rows of every kind, generated once, read-only for tests."""
    out = tmp_path_factory.mktemp("generated") / "landing"
    result = run_cli("generate", out, "--branches", 9, "--days", 6, "--seed", 11, "--bad-rate", 0.04)
    assert result.code == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def expected(generated) -> dict:
    return json.loads((generated / "_expected.json").read_text())


@pytest.fixture
def landing(tmp_path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def copy_samples(dest: Path) -> list[Path]:
    shutil.copytree(SAMPLES, dest, dirs_exist_ok=True)
    return sorted(dest.rglob("*.csv"))


# PostgreSQL: a server on this machine (and on CI). Each test gets a database of its
# own, dropped afterwards. Without a server the tests skip, except on CI.
POSTGRES_ADMIN_URL = os.environ.get("CAFE_ETL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["duckdb", "postgres"]


def _postgres_error() -> str | None:
    import psycopg

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


_POSTGRES_ERROR: list[str | None] = []


def require_postgres() -> None:
    if not _POSTGRES_ERROR:
        _POSTGRES_ERROR.append(_postgres_error())
    error = _POSTGRES_ERROR[0]
    if error:
        message = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class PostgresDatabases:
    """Creates throwaway databases on the test server and drops them all at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self) -> str:
        import uuid

        import psycopg

        require_postgres()
        name = f"cafe_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
        return f"{base}/{name}"

    def drop(self, url: str) -> None:
        """Drop the database behind ``url`` (a DuckDB URL is left to its temporary folder)."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        if not url.startswith("postgresql://") or name not in self.names:
            return
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.names.remove(name)

    def drop_all(self) -> None:
        base = POSTGRES_ADMIN_URL.rpartition("/")[0]
        for name in list(self.names):
            self.drop(f"{base}/{name}")


@pytest.fixture(scope="session")
def postgres_databases():
    databases = PostgresDatabases()
    yield databases
    databases.drop_all()


def new_warehouse(backend: str, folder: Path, databases: PostgresDatabases) -> str:
    """A fresh, empty warehouse URL of the given backend."""
    if backend == "postgres":
        return databases.create()
    if backend == "iceberg":
        pytest.importorskip("pyiceberg", reason="pyiceberg is not installed (pip install -e '.[iceberg]')")
        return f"iceberg:///{folder / 'lake'}"
    return f"duckdb:///{folder / 'warehouse.duckdb'}"


@pytest.fixture(params=BACKENDS)
def warehouse_url(request, tmp_path, postgres_databases):
    url = new_warehouse(request.param, tmp_path, postgres_databases)
    yield url
    postgres_databases.drop(url)


def query(url: str, sql: str, params=()) -> list[tuple]:
    """Read any warehouse through its read gateway (portable SQL, ``?`` parameters)."""
    from cafe_etl.warehouse import open_warehouse

    with open_warehouse(str(url)).reader() as reader:
        return reader.query(sql, params)


def customer_mismatches(url: str) -> list[tuple]:
    """Customers whose row in ``dim_customer`` is not what the facts say (first day and
    the lowest branch key that day; last day, sales and revenue to date), or who are in
    one and not the other: none, always, in a SQL warehouse."""
    return query(url, """
        WITH k AS (
            SELECT customer_key, min(date_key) AS first_key, max(date_key) AS last_key, count(*) AS sales,
                   sum(total) AS revenue
            FROM fact_sale WHERE customer_key IS NOT NULL GROUP BY customer_key),
        truth AS (
            SELECT f.customer_key, d.date AS first_seen, min(f.branch_key) AS first_branch_key, l.date AS last_seen,
                   k.sales, k.revenue
            FROM fact_sale f
            JOIN k ON k.customer_key = f.customer_key AND k.first_key = f.date_key
            JOIN dim_date d ON d.date_key = f.date_key
            JOIN dim_date l ON l.date_key = k.last_key
            GROUP BY f.customer_key, d.date, l.date, k.sales, k.revenue)
        SELECT t.customer_key, t.first_seen, t.first_branch_key, t.last_seen, t.sales, t.revenue,
               c.customer_key, c.first_seen, c.first_branch_key, c.last_seen, c.sales, c.revenue
        FROM truth t FULL OUTER JOIN dim_customer c ON c.customer_key = t.customer_key
        WHERE t.customer_key IS NULL OR c.customer_key IS NULL OR t.first_seen <> c.first_seen
           OR t.first_branch_key <> c.first_branch_key OR t.last_seen IS DISTINCT FROM c.last_seen
           OR t.sales IS DISTINCT FROM c.sales OR t.revenue IS DISTINCT FROM c.revenue
        ORDER BY 1, 7 LIMIT 20""") + customer_rollup_mismatches(url)


def customer_rollup_mismatches(url: str) -> list[tuple]:
    """Rows of ``agg_customer_week`` (a customer's sales per week, and the Monday of the
    week of their first sale) and ``agg_customer_branch`` (their first and last day at a
    branch) that the facts do not give, or that are missing: none, always."""
    weeks = query(url, """
        WITH truth AS (
            SELECT s.customer_key, d.date - (d.weekday - 1) AS monday, count(*) AS sales
            FROM fact_sale s JOIN dim_date d ON d.date_key = s.date_key
            WHERE s.customer_key IS NOT NULL GROUP BY s.customer_key, d.date - (d.weekday - 1)),
        cohort AS (
            SELECT s.customer_key, min(d.date - (d.weekday - 1)) AS cohort
            FROM fact_sale s JOIN dim_date d ON d.date_key = s.date_key
            WHERE s.customer_key IS NOT NULL GROUP BY s.customer_key)
        SELECT 'week', t.customer_key, t.monday, c.cohort, t.sales, w.customer_key, w.monday, w.cohort, w.sales
        FROM (truth t JOIN cohort c ON c.customer_key = t.customer_key)
        FULL OUTER JOIN agg_customer_week w ON w.customer_key = t.customer_key AND w.monday = t.monday
        WHERE t.customer_key IS NULL OR w.customer_key IS NULL OR t.sales <> w.sales OR c.cohort <> w.cohort
        ORDER BY 2, 3, 6, 7 LIMIT 20""")
    return weeks + query(url, """
        WITH truth AS (
            SELECT customer_key, branch_key, min(date_key) AS first_key, max(date_key) AS last_key
            FROM fact_sale WHERE customer_key IS NOT NULL GROUP BY customer_key, branch_key)
        SELECT 'branch', t.customer_key, t.branch_key, t.first_key, t.last_key,
               b.customer_key, b.branch_key, b.first_key, b.last_key
        FROM truth t FULL OUTER JOIN agg_customer_branch b
          ON b.customer_key = t.customer_key AND b.branch_key = t.branch_key
        WHERE t.customer_key IS NULL OR b.customer_key IS NULL OR t.first_key <> b.first_key
           OR t.last_key <> b.last_key
        ORDER BY 2, 3, 6, 7 LIMIT 20""")


def chain_pair_mismatches(url: str) -> list[tuple]:
    """Days and pairs whose count in ``agg_pair_date`` (the chain's, kept by loads) is not
    ``agg_pair_day`` summed over the branches, or is zero, or that it holds twice: none,
    always, in a SQL warehouse."""
    twice = query(url, "SELECT date_key, a_key, b_key, count(*) FROM agg_pair_date "
                       "GROUP BY date_key, a_key, b_key HAVING count(*) > 1")
    return twice + query(url, """
        WITH truth AS (
            SELECT date_key, a_key, b_key, sum(sales) AS sales FROM agg_pair_day GROUP BY date_key, a_key, b_key)
        SELECT t.date_key, t.a_key, t.b_key, t.sales, c.date_key, c.a_key, c.b_key, c.sales
        FROM truth t FULL OUTER JOIN agg_pair_date c
          ON c.date_key = t.date_key AND c.a_key = t.a_key AND c.b_key = t.b_key
        WHERE t.date_key IS NULL OR c.date_key IS NULL OR t.sales <> c.sales OR c.sales = 0
        ORDER BY 1, 2, 3, 5, 6, 7 LIMIT 20""")


def text_values(url: str) -> list[str]:
    """Every distinct value of every text column of every table (fingerprints excepted)."""
    columns = query(
        url,
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema IN ('main', 'public') AND lower(data_type) IN ('varchar', 'character varying', 'text')
             AND column_name <> 'content_sha256'
             AND table_name IN (SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE')""",
    )
    values: list[str] = []
    for table, column in columns:
        values += [v for (v,) in query(url, f'SELECT DISTINCT "{column}" FROM "{table}"') if v]
    return values


# S3: moto's standalone server, a real HTTP endpoint on a free local port, started
# once per test session. Each test gets a bucket of its own.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """``moto_server`` in a subprocess: start, stop (an outage), start again on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> S3Server:
        import time
        import urllib.request

        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto's S3 server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())


def _boto_credentials() -> dict:
    return {"aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"]}


@pytest.fixture(scope="session")
def s3_server():
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:  # the [dev] extra installs it
        if os.environ.get("CI"):
            pytest.fail(f"moto[server] is not installed: {exc}")
        pytest.skip(f"moto[server] is not installed: {exc}")
    server = S3Server().start()
    yield server
    server.stop()


@dataclass
class Bucket:
    name: str
    server: S3Server

    @property
    def env(self) -> dict:
        """What a CLI subprocess needs to use this endpoint (the standard SDK variable)."""
        return {"AWS_ENDPOINT_URL_S3": self.server.endpoint}

    def url(self, key: str = "") -> str:
        return f"s3://{self.name}/{key}"

    def put(self, key: str, data: bytes | Path) -> None:
        body = data.read_bytes() if isinstance(data, Path) else data
        self.server.client().put_object(Bucket=self.name, Key=key, Body=body)

    def delete(self, key: str) -> None:
        self.server.client().delete_object(Bucket=self.name, Key=key)


@pytest.fixture
def bucket(s3_server) -> Bucket:
    import uuid

    name = f"landing-{uuid.uuid4().hex[:10]}"
    s3_server.client().create_bucket(Bucket=name)
    return Bucket(name, s3_server)


def by_day(folder: Path) -> dict[str, list[Path]]:
    """A generated landing folder's files grouped by business day (from the canonical
    names, branch_DD-MM-YYYY_HH-MM-SS.csv), days in order."""
    import re

    days: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.csv")):
        day, month, year = re.search(r"_(\d\d)-(\d\d)-(\d{4})_", path.name).groups()
        days.setdefault(f"{year}-{month}-{day}", []).append(path)
    return dict(sorted(days.items()))
