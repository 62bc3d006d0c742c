"""The Spark executor (DESIGN §12): each batch's transform runs as a Spark task.

The driver (``cafe-etl ingest --executor spark``) discovers, plans and claims batches
with the ledger exactly as a local run does, and loads each batch's result in one
warehouse transaction. Only the transform moves into a task, where the same engine
stages run (DuckDB, as ``pipeline.batch`` runs them locally). Spark may run a task
more than once (a retry, a lost executor, a speculative copy): a task writes nothing,
and only the driver commits, once per batch, through the ledger, so every file is
loaded exactly once whatever Spark does.

Personal data stays out of Spark's own machinery. A task is sent file locations and
content hashes, never file contents (PySpark writes what it parallelises to a
temporary file) and never the customer-key secret: it reads its files itself,
checks that each is the version the driver claimed (if not, it hands the batch back
and the driver transforms what it read itself), and takes the secret from its
own environment (``CAFE_ETL_CUSTOMER_KEY``, e.g. ``spark.executorEnv`` filled from a
secret store, or the key file), checked against the driver's by a fingerprint. It
returns the staged rows, which hold no personal data, as Arrow, and each file's
verdict. An engine error or running out of memory comes back as a result rather
than a raised error: the driver settles it as a local run would (retry alone, split,
set the file aside), Spark does not retry what would fail again, and no engine
message (which may quote a row) reaches Spark's logs. Anything else fails the task,
which Spark retries.

Files are read by the tasks from their locations, so on a cluster they must be on
storage every executor reaches (S3, or a shared file system). A file large enough to
be processed in slices is processed by the driver, as locally.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb

from cafe_etl import keys
from cafe_etl.config import ENV_CUSTOMER_KEY, Settings, spark_master_url
from cafe_etl.engine import Engine, EnginePool
from cafe_etl.errors import CafeEtlError, ConfigError, ContentFault
from cafe_etl.logs import LOGGER_NAME
from cafe_etl.pipeline.batch import Judged, ReadFile, read_file, transform_batch
from cafe_etl.pipeline.stage import STAGED
from cafe_etl.pipeline.validate import FileCounts
from cafe_etl.sources import locate

log = logging.getLogger(LOGGER_NAME)
# Spark's own start-up and per-job chatter is for Spark's logs, not the user's terminal.
LOG_LEVEL = "ERROR"
UNREAD = "not the version the run claimed (gone, changed or unreachable from the executor)"


class SparkUnavailable(CafeEtlError):
    """The Spark executor was asked for but cannot start."""


class SparkJobFailed(CafeEtlError):
    """A batch's task failed every attempt Spark allows: no file's doing, so the run stops
    (its claims wait for the next run)."""


@dataclass(frozen=True)
class TaskFile:
    location: str
    sha256: str  # the version the driver claimed


@dataclass(frozen=True)
class TaskInput:
    """One batch, as a task is sent it: locations and hashes, no contents, no secret."""

    files: tuple[TaskFile, ...]
    file_ids: dict[int, int]  # position in ``files`` -> ledger id
    settings: Settings  # without the secret or the warehouse's address
    key_check: str | None  # the driver's secret's fingerprint


@dataclass
class TaskResult:
    """What a task sends back: each file's verdict and the staged rows, or why it could not."""

    verdicts: list[tuple[int | None, FileCounts | None, str | None]] = field(default_factory=list)
    tables: dict[str, bytes] = field(default_factory=dict)  # staged relation -> Arrow IPC stream
    trouble: str | None = None  # "memory" | "content" | "key" | "unread"


def _scrubbed(settings: Settings) -> Settings:
    """Settings a task may be sent: nothing secret, no warehouse address (it may hold a password)."""
    return replace(settings, customer_key=None, warehouse="")


def transform_task(task: TaskInput) -> TaskResult:
    """Inside a Spark task: read the batch's files, run the engine stages, return what loads."""
    settings = replace(task.settings, customer_key=os.environ.get(ENV_CUSTOMER_KEY) or None)
    try:
        secret = keys.secret_for(settings, make=False)
    except ConfigError:
        secret = None
    if keys.check_of(secret) != task.key_check:
        return TaskResult(trouble="key")
    reads = [_read_again(f, settings) for f in task.files]
    if any(r.error for r in reads):
        # Not the version the driver read (gone, changed, unreachable from here): the
        # driver, which read it, transforms the batch itself.
        return TaskResult(trouble="unread")
    import pyarrow  # noqa: F401 - a missing one is the executor's setup, not any file's content

    # One core per task (Spark's task slot); the executor's memory limit per engine.
    with EnginePool(workers=1, threads=1, memory_limit=settings.memory_limit) as pool:
        engine = pool.engines[0]
        try:
            judged = transform_batch(engine, reads, task.file_ids, settings, secret)
            tables = {name: _arrow_bytes(engine, name) for name in STAGED}
        except (duckdb.OutOfMemoryException, MemoryError):
            return TaskResult(trouble="memory")
        except duckdb.Error:  # the batch's content's doing (the engine's input is all that varies)
            return TaskResult(trouble="content")
    return TaskResult([(j.idx, j.counts, j.failure) for j in judged], tables)


def _read_again(f: TaskFile, settings: Settings) -> ReadFile:
    """The file read by the task; ``error`` set when it is not the version claimed."""
    source = locate(f.location, settings.s3_endpoint_url)
    if source is None:
        from cafe_etl.sources.base import LandingFile

        return ReadFile(LandingFile(f.location, 0, 0.0, _gone), error=UNREAD)
    read = read_file(source)
    if not read.error and read.sha256 != f.sha256:
        read.error = UNREAD
    return read


def _gone() -> bytes:
    raise FileNotFoundError


def _arrow_bytes(engine: Engine, name: str) -> bytes:
    import pyarrow as pa

    table = engine.con.sql(f"SELECT * FROM {name}").to_arrow_table()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


Task = Callable[[TaskInput], TaskResult]


class SparkExecutor:
    """Transforms batches as Spark tasks, one task per batch; ``task`` is what each runs."""

    def __init__(self, session: Any, settings: Settings, secret: bytes | None, task: Task = transform_task) -> None:
        self._context = session.sparkContext
        self._settings = _scrubbed(settings)
        self._key_check = keys.check_of(secret)
        self._task = task
        self._local = (settings, secret)  # for a batch the executors could not read

    @property
    def concurrency(self) -> int:
        """Batches in flight at once: one per task slot, within what the driver holds."""
        return max(1, min(self._context.defaultParallelism, 8))

    def transform(self, engine: Engine, files: list[ReadFile], file_ids: dict[int, int]) -> list[Judged]:
        """The batch transformed by a task, its staged rows put on ``engine`` to load."""
        sent = TaskInput(tuple(TaskFile(f.source.location, f.sha256) for f in files), file_ids, self._settings,
                         self._key_check)
        task = self._task
        try:
            [result] = self._context.parallelize([sent], 1).map(task).collect()
        except Exception as exc:  # Py4J's error: the job was aborted after Spark's retries
            raise SparkJobFailed(f"a Spark task failed on every attempt ({_first_line(exc)}); "
                                 "the batch's files stay claimed for the next run") from None
        if result.trouble == "unread":
            log.info("a Spark task could not read its batch's files as claimed: the batch is transformed here")
            return transform_batch(engine, files, file_ids, *self._local)
        if result.trouble == "memory":
            raise duckdb.OutOfMemoryException("a Spark task ran out of memory")
        if result.trouble == "content":
            raise ContentFault("transformed")
        if result.trouble == "key":
            raise ConfigError("the Spark executors hold a different customer key than this run (or none): "
                              "give them the same CAFE_ETL_CUSTOMER_KEY (spark.executorEnv) or key file")
        for name, data in result.tables.items():
            _put(engine, name, data)
        return [Judged(f, idx, counts, failure)
                for f, (idx, counts, failure) in zip(files, result.verdicts, strict=True)]


def _put(engine: Engine, name: str, data: bytes) -> None:
    import pyarrow as pa

    table = pa.ipc.open_stream(data).read_all()
    engine.con.register(f"arrow_{name}", table)
    try:
        engine.run(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM arrow_{name}")
    finally:
        engine.con.unregister(f"arrow_{name}")


def _first_line(exc: BaseException) -> str:
    """The Java-side reason, without the stack (nor a task's message, which could quote data)."""
    text = str(exc).strip().splitlines()
    reason = next((line for line in text if "Job aborted" in line or "Exception" in line), text[0] if text else "")
    return reason[:200]


@contextmanager
def spark_executor(settings: Settings, secret: bytes | None, task: Task = transform_task) -> Iterator[SparkExecutor]:
    """A Spark application on ``settings.spark_master`` for one run, stopped after it."""
    master = spark_master_url(settings.spark_master)
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable("the Spark executor needs pyspark: pip install 'cafe-etl[spark]'") from None
    log_config = Path(__file__).resolve().parent.parent / "data" / "spark-log4j2.properties"
    builder = (SparkSession.builder.master(master).appName("cafe-etl ingest")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.python.worker.reuse", "true")
               # Spark's UI and event logs show the environment: redact the customer key too.
               .config("spark.redaction.regex", "(?i)secret|password|token|access[.]?key|customer[._]?key")
               .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log_config}"))
    if master.startswith("local"):
        # A local application serves nobody else: it binds the loopback interface only,
        # and its tasks run in this Python, where cafe-etl is installed.
        # (PySpark reads the workers' Python from the environment when the context starts.)
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    try:
        session = builder.getOrCreate()
    except Exception:  # no Java, no cluster at that address: the user's setup, said in a sentence
        raise SparkUnavailable(f"Spark could not start on {settings.spark_master} (it needs Java 17 or newer, "
                               "JAVA_HOME or java on PATH, and a reachable master; Spark's reason is above)"
                               ) from None
    session.sparkContext.setLogLevel(LOG_LEVEL)
    try:
        yield SparkExecutor(session, settings, secret, task)
    finally:
        session.stop()
