"""Reading landing files in batches, ahead of the engines.

Files are grouped into size-bounded batches; a background thread reads and
fingerprints them up to ``ahead`` batches in advance, so the engines never wait for
the disk or the network (and memory holds at most ``ahead`` extra batches).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from cafe_etl.pipeline.batch import ReadFile, read_file
from cafe_etl.sources import LandingFile

MAX_FILES_PER_BATCH = 2000


def chunks(files: Sequence[LandingFile], max_bytes: int, engines: int = 2) -> list[list[LandingFile]]:
    """Batches of at most ``max_bytes``, as many as a multiple of ``engines`` and of even
    size, so the engines finish together instead of one working alone at the end. The
    first batch is half the others: the first engine starts sooner, and the engines
    run out of step, so one loads while the other transforms."""
    total = sum(f.size for f in files)
    rounds = max(1, -(-total // (max_bytes * engines)))
    even = max(1, -(-total // (rounds * engines)))
    chunks: list[list[LandingFile]] = []
    current: list[LandingFile] = []
    size = 0
    for f in files:
        limit = even // 2 if not chunks and rounds > 1 else even
        if current and (size + f.size > limit or len(current) >= MAX_FILES_PER_BATCH):
            chunks.append(current)
            current, size = [], 0
        current.append(f)
        size += f.size
    if current:
        chunks.append(current)
    return chunks


class BatchReader:
    """Batches of read files, read by a background thread up to ``ahead`` batches in
    advance, so the engines never wait for the disk (and memory holds at most ``ahead``
    extra batches). Reading starts at once, while the warehouse is being opened."""

    # Objects in a store are fetched several at a time: each GET waits mostly on the network.
    REMOTE_READERS = 8

    def __init__(self, files: Sequence[LandingFile], max_bytes: int, ahead: int = 2) -> None:
        self._chunks = chunks(files, max_bytes, ahead)
        self._ahead = ahead
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="reader")
        remote = any(f.local_path is None for f in files)
        self._fetchers = ThreadPoolExecutor(self.REMOTE_READERS, thread_name_prefix="fetch") if remote else None
        self._pending: list[Future] = []
        self._next = 0
        self._fill()

    def _read(self, chunk: list[LandingFile]) -> list[ReadFile]:
        if self._fetchers is None:
            return [read_file(f) for f in chunk]
        return list(self._fetchers.map(read_file, chunk))

    def _fill(self) -> None:
        while len(self._pending) <= self._ahead and self._next < len(self._chunks):
            self._pending.append(self._pool.submit(self._read, self._chunks[self._next]))
            self._next += 1

    def __iter__(self) -> Iterator[list[ReadFile]]:
        try:
            while self._pending:
                batch = self._pending.pop(0).result()
                self._fill()
                yield batch
        finally:
            self.close()

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        if self._fetchers is not None:
            self._fetchers.shutdown(wait=True)
