"""Scheduling: the engine pool, and one batch per idle engine.

Two engines keep the cores busy (one transforms while the other loads). Each batch
runs on an idle engine, inside the pool's ``MemoryGate``; a batch that cannot be
finished is settled by ``pipeline.settle``. Once no batch is left, the engines still
working take the idle engines' cores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from queue import Queue
from typing import TypeVar

from cafe_etl.config import Settings
from cafe_etl.engine import Engine, EnginePool
from cafe_etl.pipeline.batch import ReadFile

Progress = Callable[[int, int], None]  # (files done, bytes done) since the last call
StopRequested = Callable[[], bool]  # checked between batches: the batches in hand are finished
R = TypeVar("R")


def engine_pool(settings: Settings, workers: int | None = None) -> EnginePool:
    """Two engines keep the cores busy (one transforms while the other loads); the
    threads are shared out between them, so the machine is not oversubscribed.
    ``workers``: as many engines instead (batches in flight, when others transform them)."""
    engines = workers or (2 if settings.threads >= 2 else 1)
    return EnginePool(workers=engines, threads=max(1, settings.threads // engines),
                      memory_limit=settings.memory_limit)


def run_batches(pool: EnginePool, batches: Iterator[list[ReadFile]], progress: Progress | None,
                job: Callable[[Engine, list[ReadFile]], R],
                stop_requested: StopRequested | None = None) -> tuple[list[R], bool]:
    """Run ``job`` on each batch, one batch per idle engine, and re-raise the first failure.

    Returns the jobs' results in batch order, and whether it stopped early because
    ``stop_requested`` turned true."""
    stopped = False
    idle: Queue[Engine] = Queue()
    for engine in pool.engines:
        idle.put(engine)
    futures: list[Future] = []

    def run(engine: Engine, batch: list[ReadFile]) -> R:
        try:
            with pool.memory.sharing():
                return job(engine, batch)
        finally:
            engine.reset()

    with ThreadPoolExecutor(len(pool.engines), thread_name_prefix="engine") as workers:
        for batch in batches:
            engine = idle.get()  # at most one batch per engine in flight: memory stays bounded
            if stop_requested is not None and stop_requested():
                stopped = True
                break
            for done in [f for f in futures if f.done()]:
                done.result()  # a failed batch stops the run
            future = workers.submit(run, engine, batch)

            def finished(f: Future, engine: Engine = engine, batch: list[ReadFile] = batch) -> None:
                idle.put(engine)
                if progress and not f.exception():
                    progress(len(batch), sum(r.source.size for r in batch))

            future.add_done_callback(finished)
            futures.append(future)
        # No batch is left: once an engine falls idle, the ones still working take its cores.
        working = [f for f in futures if not f.done()]
        if len(working) < len(pool.engines) or wait(working, return_when=FIRST_COMPLETED).not_done:
            pool.lend_idle_cores()
        results = [future.result() for future in futures]
    return results, stopped
