"""Many small batches on two engines at once: the same warehouse as one big batch; and the
engines' share of the cores."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

import duckdb
from tests.conftest import chain_pair_mismatches, customer_mismatches, query

from cafe_etl.analytics import report as reports
from cafe_etl.analytics.jsonout import dumps
from cafe_etl.config import load_settings
from cafe_etl.engine import Engine, EnginePool, MemoryGate
from cafe_etl.pipeline.run import ingest
from cafe_etl.pipeline.schedule import run_batches as _run_batches
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
    assert chain_pair_mismatches(warehouse) == [] and customer_mismatches(warehouse) == []


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


def test_a_batch_retried_alone_waits_for_the_others_and_holds_back_new_ones():
    gate = MemoryGate()
    first_in, release_first = threading.Event(), threading.Event()
    alone_started, release_alone = threading.Event(), threading.Event()
    third_in = threading.Event()

    def first() -> None:
        with gate.sharing():
            first_in.set()
            release_first.wait(10)

    def second() -> None:
        first_in.wait(10)
        with gate.sharing(), gate.alone():
            alone_started.set()
            release_alone.wait(10)

    def third() -> None:
        with gate.sharing():
            third_in.set()

    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    assert first_in.wait(10)
    assert not alone_started.wait(0.3)  # the first batch is still in hand
    late = threading.Thread(target=third)
    late.start()
    threads.append(late)
    release_first.set()
    assert alone_started.wait(10)
    assert not third_in.wait(0.3)  # no batch starts while one works alone
    release_alone.set()
    assert third_in.wait(10)
    for t in threads:
        t.join(10)


def test_a_batch_that_ran_out_of_memory_once_loads_when_retried_alone(generated, expected, warehouse_url,
                                                                       monkeypatch):
    """Another engine's batch can take the memory a batch needs: running out once is not
    the file's fault, so the batch is tried again alone before anything is failed."""
    from cafe_etl.pipeline import batch as batches

    failures = {"judge": 1, "load": 1}
    real_judge = batches.judge

    def judge_once_short(engine, files, settings, secret):
        if files and failures["judge"]:
            failures["judge"] -= 1
            raise duckdb.OutOfMemoryException("could not allocate block")
        return real_judge(engine, files, settings, secret)

    monkeypatch.setattr(batches, "judge", judge_once_short)  # a batch's transform (batch.transform_batch)
    session_type = type(open_warehouse(str(warehouse_url)))
    real_session = session_type.load_session

    @contextmanager
    def load_session_once_short(self, pool):
        with real_session(self, pool) as session:
            real_load = session.load

            def load(engine, records, run_id):
                if failures["load"]:
                    failures["load"] -= 1
                    raise duckdb.OutOfMemoryException("could not allocate block")
                real_load(engine, records, run_id)

            session.load = load
            yield session

    monkeypatch.setattr(session_type, "load_session", load_session_once_short)
    # One file a batch: a one-file batch that runs out of memory cannot be split.
    settings = load_settings(warehouse=str(warehouse_url), threads=2).with_overrides(batch_bytes=1)
    summary = ingest([str(generated)], settings)
    assert failures == {"judge": 0, "load": 0}
    assert summary.ok, [(f.location, f.outcome, f.error) for f in summary.files if f.outcome != "loaded"]
    assert summary.count("loaded") == expected["files"]
    with open_warehouse(str(warehouse_url)).reader() as reader:
        got = reports.build(reader, reports.Filters())
    assert json.loads(dumps(got)) == expected["report"]
