"""Many small batches on two engines at once: the same warehouse as one big batch; and the
engines' share of the cores."""

from __future__ import annotations

import json
import threading
import time

from tests.conftest import query

from cafe_etl.analytics import report as reports
from cafe_etl.analytics.jsonout import dumps
from cafe_etl.config import load_settings
from cafe_etl.pipeline.engine import Engine, EnginePool
from cafe_etl.pipeline.run import _run_batches, ingest
from cafe_etl.warehouse import open_warehouse


def test_small_batches_loaded_concurrently_give_the_truth(generated, expected, warehouse_url):
    warehouse = warehouse_url
    settings = load_settings(warehouse=str(warehouse), threads=2).with_overrides(batch_bytes=40_000)
    summary = ingest([str(generated)], settings)
    assert summary.ok and summary.count("loaded") == expected["files"]
    with open_warehouse(str(warehouse)).reader() as reader:
        got = reports.build(reader, reports.Filters())
    assert json.loads(dumps(got)) == expected["report"]
    dupes = query(warehouse, """
        SELECT (SELECT count(*) - count(DISTINCT customer_key) FROM dim_customer),
               (SELECT count(*) - count(DISTINCT product_key) FROM dim_product),
               (SELECT count(*) - count(DISTINCT branch_key) FROM dim_branch),
               (SELECT count(*) - count(DISTINCT date_key) FROM dim_date),
               (SELECT count(DISTINCT run_id) FROM etl_file)""")[0]
    assert dupes == (0, 0, 0, 0, 1)


def _threads_seen(engine: Engine, wanted: int, timeout: float = 10.0) -> int:
    """The engine database's thread count, once it is ``wanted`` or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        threads = int(engine.rows("SELECT current_setting('threads')")[0][0])
        if threads == wanted or time.monotonic() > deadline:
            return threads
        time.sleep(0.01)


def test_an_engine_left_working_alone_gets_the_idle_engines_core():
    seen: list[int] = []
    with EnginePool(workers=2, threads=1, memory_limit="256MB") as pool:
        assert int(pool.engines[0].rows("SELECT current_setting('threads')")[0][0]) == 1
        # One batch for two engines: the other engine is idle from the start.
        _run_batches(pool, iter([[]]), None, lambda engine, batch: seen.append(_threads_seen(engine, 2)))
    assert seen == [2]


def test_engines_keep_their_share_while_every_engine_has_a_batch():
    started = threading.Barrier(2, timeout=10)
    seen: list[int] = []

    def job(engine: Engine, batch: list) -> None:
        started.wait()  # both engines are working
        seen.append(int(engine.rows("SELECT current_setting('threads')")[0][0]))
        started.wait()  # both have looked before either finishes

    with EnginePool(workers=2, threads=1, memory_limit="256MB") as pool:
        _run_batches(pool, iter([[], []]), None, job)
    assert seen == [1, 1]
