"""Settings, resolved once: command-line option, then environment, then default.

Environment variables are read here and nowhere else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from pathlib import Path

from cafe_etl.errors import ConfigError

ENV_WAREHOUSE = "CAFE_ETL_WAREHOUSE"
ENV_KEY_FILE = "CAFE_ETL_KEY_FILE"
ENV_CUSTOMER_KEY = "CAFE_ETL_CUSTOMER_KEY"  # the secret itself, hex: for hosts without a key file
ENV_CUSTOMER_KEYS = "CAFE_ETL_CUSTOMER_KEYS"
ENV_MEMORY_LIMIT = "CAFE_ETL_MEMORY_LIMIT"
ENV_THREADS = "CAFE_ETL_THREADS"
ENV_BATCH_BYTES = "CAFE_ETL_BATCH_BYTES"
ENV_LARGE_FILE_BYTES = "CAFE_ETL_LARGE_FILE_BYTES"
ENV_EXECUTOR = "CAFE_ETL_EXECUTOR"  # where batches are transformed: local (default) or spark
ENV_SPARK_MASTER = "CAFE_ETL_SPARK_MASTER"  # the Spark master of --executor spark
ENV_LOCK_WAIT = "CAFE_ETL_LOCK_WAIT"  # seconds a loader waits for an embedded warehouse another process holds
ENV_AUTH_TOKEN = "CAFE_ETL_AUTH_TOKEN"  # the dashboard's access token (`serve`)
ENV_AUTH_TOKEN_FILE = "CAFE_ETL_AUTH_TOKEN_FILE"  # ... or a file holding it
# The standard variables of the AWS SDKs for an S3-compatible store (MinIO, Ceph, ...).
ENV_S3_ENDPOINT = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
DEFAULT_WAREHOUSE = "data/warehouse.duckdb"
DEFAULT_LANDING = Path("data/landing")


def default_key_file() -> Path:
    """Outside the warehouse and the project: the user's config directory."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "cafe-etl" / "customer-key"


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{ENV_CUSTOMER_KEYS} must be on or off, not {value!r}")


def _positive_int(name: str, value: str | None, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    if number < 1:
        raise ConfigError(f"{name} must be at least 1")
    return number


def _seconds(name: str, value: str | None, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 0 <= number <= 86400:
        raise ConfigError(f"{name} must be between 0 and 86400 seconds")
    return number


EXECUTORS = ("local", "spark")


def _executor(value: str | None) -> str:
    if not value:
        return Settings.executor
    if value.strip().lower() not in EXECUTORS:
        raise ConfigError(f"{ENV_EXECUTOR} must be one of {', '.join(EXECUTORS)}, not {value!r}")
    return value.strip().lower()


@dataclass(frozen=True)
class Rules:
    """Validation limits (DESIGN §3). Part of the rules, so kept together."""

    earliest_date: date = date(2000, 1, 1)
    # A sale dated more than this many days after today is refused as BAD_TIMESTAMP.
    future_days: int = 1
    max_item_price: Decimal = Decimal("100.00")
    max_items_per_sale: int = 100


@dataclass(frozen=True)
class Settings:
    warehouse: str = DEFAULT_WAREHOUSE
    key_file: Path = field(default_factory=default_key_file)
    customer_key: str | None = field(default=None, repr=False)  # hex; takes precedence over key_file
    customer_keys: bool = True
    memory_limit: str = "640MB"
    threads: int = 2
    # Exports read and transformed together: larger batches spread each batch's fixed
    # cost (planning, commits) over more rows; each of the two engines holds one.
    batch_bytes: int = 64 * 1024 * 1024
    # A local file at least this large is processed in slices (large.slice_bytes).
    large_file_bytes: int = 128 * 1024 * 1024
    s3_endpoint_url: str | None = None
    # Seconds a loader waits for an embedded (DuckDB) warehouse that another process
    # holds before giving up as busy.
    lock_wait: float = 10.0
    # Where each batch is transformed: "local" (the run's own engines) or "spark"
    # (tasks of a Spark application; pipeline/spark.py), and that application's master.
    executor: str = "local"
    spark_master: str = "local[*]"
    rules: Rules = field(default_factory=Rules)

    def with_overrides(self, **changes) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit (non-None) overrides on top."""
    env = os.environ
    settings = Settings(
        warehouse=env.get(ENV_WAREHOUSE) or DEFAULT_WAREHOUSE,
        key_file=Path(env[ENV_KEY_FILE]) if env.get(ENV_KEY_FILE) else default_key_file(),
        customer_key=env.get(ENV_CUSTOMER_KEY) or None,
        customer_keys=_flag(env.get(ENV_CUSTOMER_KEYS), True),
        memory_limit=env.get(ENV_MEMORY_LIMIT) or Settings.memory_limit,
        threads=_positive_int(ENV_THREADS, env.get(ENV_THREADS), min(os.cpu_count() or 1, 4)),
        batch_bytes=_positive_int(ENV_BATCH_BYTES, env.get(ENV_BATCH_BYTES), Settings.batch_bytes),
        large_file_bytes=_positive_int(ENV_LARGE_FILE_BYTES, env.get(ENV_LARGE_FILE_BYTES),
                                       Settings.large_file_bytes),
        s3_endpoint_url=next((env[name] for name in ENV_S3_ENDPOINT if env.get(name)), None),
        lock_wait=_seconds(ENV_LOCK_WAIT, env.get(ENV_LOCK_WAIT), Settings.lock_wait),
        executor=_executor(env.get(ENV_EXECUTOR)),
        spark_master=env.get(ENV_SPARK_MASTER) or Settings.spark_master,
    )
    return settings.with_overrides(**overrides)


_SPARK_MASTER = re.compile(r"local(\[(\*|[1-9][0-9]*)(,[1-9][0-9]*)?\])?|yarn|(spark|k8s|mesos)://\S+")


def spark_master_url(url: str) -> str:
    """A Spark master URL as Spark accepts them, or a clear error (not a JVM's stack trace)."""
    if not _SPARK_MASTER.fullmatch(url.strip()):
        raise ConfigError(f"{url!r} is not a Spark master: use local, local[N], local[N,MAX_FAILURES], "
                          "spark://HOST:PORT, k8s://HOST:PORT or yarn")
    return url.strip()
