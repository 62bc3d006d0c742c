"""``cafe-etl watch`` as a real long-running process: files added in waves on a folder
and on a bucket, a file written slowly, outages of the warehouse and of S3, and a
clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.conftest import CLI, S3Server, by_day, run_cli

INTERVAL = "0.5"
SETTLE = "0.5"


class Watch:
    """A ``cafe-etl watch`` subprocess logging JSON lines to a file."""

    def __init__(self, tmp_path: Path, source: str, warehouse: Path, *args: str, env: dict | None = None) -> None:
        self.log_path = tmp_path / f"watch-{time.monotonic_ns()}.log"
        self.warehouse = warehouse
        command = [*CLI, "watch", source, "--warehouse", str(warehouse), "--interval", INTERVAL,
                   "--settle", SETTLE, "--log-format", "json", *args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log, env={**os.environ, **(env or {})})

    def events(self) -> list[dict]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_for_event(self, name: str, timeout: float = 60, **fields) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events():
                if e["event"] == name and all(e.get(k) == v for k, v in fields.items()):
                    return e
            assert self.proc.poll() is None, f"watch exited early:\n{self.log_path.read_text()}"
            time.sleep(0.1)
        raise AssertionError(f"no {name} event within {timeout}s:\n{self.log_path.read_text()}")

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def watches():
    started: list[Watch] = []
    yield started
    for w in started:
        w.kill()


def report(warehouse: Path) -> dict | None:
    """The report, or None while the warehouse does not exist yet or is being written."""
    result = run_cli("report", "--warehouse", warehouse, "--format", "json")
    return result.json() if result.code == 0 else None


def wait_for_days(warehouse: Path, days: list[dict], timeout: float = 90) -> float:
    """Seconds until the report's days are exactly ``days``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        got = report(warehouse)
        if got is not None and got["days"] == days:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"the report never showed {[d['date'] for d in days]}: {got and got['days']}")


def ledger(warehouse: Path) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute("SELECT location, status, rows_read FROM etl_file ORDER BY file_id").fetchall()


def waves(generated: Path) -> list[list[Path]]:
    days = list(by_day(generated).values())
    return [sum(days[i:i + 2], []) for i in range(0, len(days), 2)]


def test_watch_a_folder_loads_each_wave_and_stops_cleanly(generated, expected, tmp_path, landing, watches):
    warehouse = tmp_path / "w.duckdb"
    watch = Watch(tmp_path, str(landing), warehouse)
    watches.append(watch)
    watch.wait_for_event("watching")
    loaded_days = 0
    for wave in waves(generated):
        for path in wave:
            shutil.copy(path, landing / path.name)
        loaded_days += len({p.name.split("_")[-2] for p in wave})
        # Visible in the report, which can read the warehouse between watch's batches.
        wait_for_days(warehouse, expected["report"]["days"][:loaded_days])
    assert report(warehouse) == expected["report"]
    assert watch.stop() == 0
    events = watch.events()
    assert events[-1]["event"] == "stopped"
    files = [e for e in events if e["event"] == "file"]
    assert sorted(e["location"] for e in files) == sorted(str(p.resolve()) for p in landing.glob("*.csv"))
    assert all(e["outcome"] == "loaded" and e["rows"] > 0 and e["seconds"] >= 0 for e in files)
    assert [status for _, status, _ in ledger(warehouse)] == ["loaded"] * expected["files"]


def test_watch_a_bucket_loads_each_wave_and_late_uploads(generated, expected, tmp_path, bucket, watches):
    warehouse = tmp_path / "w.duckdb"
    days = by_day(generated)
    late = days[next(iter(days))].pop()  # one branch's first day arrives after the others
    watch = Watch(tmp_path, bucket.url("exports/"), warehouse, "--reconcile-every", "3", env=bucket.env)
    watches.append(watch)
    watch.wait_for_event("watching")
    shown = []
    for day, paths in days.items():
        for path in paths:
            bucket.put(f"exports/{day}/{path.name}", path)
        shown.append(day)
        if len(shown) % 2 == 0:  # a wave of two days
            want = expected["report"]["days"][1:len(shown)]
            wait_until(warehouse, lambda got, want=want: len(got["days"]) == len(shown) and got["days"][1:] == want)
    # The late file goes into the oldest date folder, behind the listing cursor: the
    # periodic full listing finds it.
    bucket.put(f"exports/{next(iter(days))}/{late.name}", late)
    wait_for_days(warehouse, expected["report"]["days"])
    assert report(warehouse) == expected["report"]
    assert watch.stop() == 0
    assert len([e for e in watch.events() if e["event"] == "file" and e["outcome"] == "loaded"]) == expected["files"]


def wait_until(warehouse: Path, condition, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = report(warehouse)
        if got is not None and condition(got):
            return got
        time.sleep(0.2)
    raise AssertionError(f"the report never met the condition: {got and got['days']}")


def test_a_file_written_slowly_is_loaded_once_complete(generated, tmp_path, landing, watches):
    warehouse = tmp_path / "w.duckdb"
    source = sorted(generated.glob("*.csv"))[0]
    lines = source.read_bytes().splitlines(keepends=True)
    # Settled after 3 s unchanged; the writer pauses 0.2 s between chunks: a machine
    # would have to stall the writer for 2.8 s to make the watcher take half a file.
    watch = Watch(tmp_path, str(landing), warehouse, "--settle", "3")
    watches.append(watch)
    watch.wait_for_event("watching")
    target = landing / source.name
    with open(target, "wb") as out:
        step = max(1, len(lines) // 12)
        for i in range(0, len(lines), step):  # a dozen chunks, 0.2 s apart
            out.write(b"".join(lines[i:i + step]))
            out.flush()
            time.sleep(0.2)
    watch.wait_for_event("file", location=str(target.resolve()))
    time.sleep(1.5)  # a few more polls: nothing more may happen to it
    assert watch.stop() == 0
    assert ledger(warehouse) == [(str(target.resolve()), "loaded", len(lines))]


def test_sigterm_mid_run_finishes_the_batch_in_hand_and_loses_nothing(generated, expected, tmp_path, landing,
                                                                      watches):
    for path in generated.glob("*.csv"):
        shutil.copy(path, landing / path.name)
    warehouse = tmp_path / "w.duckdb"
    # Small batches, so the stop lands between batches of one run.
    watch = Watch(tmp_path, str(landing), warehouse, env={"CAFE_ETL_BATCH_BYTES": "30000"})
    watches.append(watch)
    watch.wait_for_event("file")  # the first batch is in
    assert watch.stop() == 0
    events = watch.events()
    assert [e["event"] for e in events][-1] == "stopped"
    ingested = [e for e in events if e["event"] == "ingested"]
    assert ingested and ingested[-1]["stopped"] is True
    done = [e["location"] for e in events if e["event"] == "file"]
    assert 0 < len(done) < expected["files"]
    assert all(status == "loaded" for _, status, _ in ledger(warehouse))  # none left claimed
    result = run_cli("ingest", landing, "--warehouse", warehouse, "--json")
    assert result.json()["files"]["loaded"] == expected["files"] - len(done)
    assert report(warehouse) == expected["report"]


def test_a_busy_warehouse_is_an_outage_that_watch_outlives(generated, tmp_path, landing, watches):
    import duckdb

    warehouse = tmp_path / "w.duckdb"
    holder = duckdb.connect(str(warehouse))  # another writer holds the file
    watch = Watch(tmp_path, str(landing), warehouse)
    watches.append(watch)
    paths = sorted(generated.glob("*.csv"))[:3]
    for path in paths:
        shutil.copy(path, landing / path.name)
    outage = watch.wait_for_event("outage")
    assert "in use by another process" in outage["error"]
    holder.close()
    watch.wait_for_event("recovered")
    for path in paths:
        watch.wait_for_event("file", location=str((landing / path.name).resolve()), outcome="loaded")
    assert watch.stop() == 0


def test_an_s3_outage_is_logged_and_watch_carries_on(generated, tmp_path, watches):
    server = S3Server().start()
    try:
        client = server.client()
        client.create_bucket(Bucket="outage")
        paths = sorted(generated.glob("*.csv"))[:2]
        client.put_object(Bucket="outage", Key=f"in/{paths[0].name}", Body=paths[0].read_bytes())
        warehouse = tmp_path / "w.duckdb"
        watch = Watch(tmp_path, "s3://outage/in/", warehouse, env={"AWS_ENDPOINT_URL_S3": server.endpoint})
        watches.append(watch)
        watch.wait_for_event("file", outcome="loaded")
        server.stop()
        outage = watch.wait_for_event("outage", timeout=120)
        assert "cannot reach the S3 endpoint" in outage["error"]
        server.start()  # a fresh, empty store on the same address
        client.create_bucket(Bucket="outage")
        for path in paths:
            client.put_object(Bucket="outage", Key=f"in/{path.name}", Body=path.read_bytes())
        watch.wait_for_event("recovered", timeout=120)
        watch.wait_for_event("file", location=f"s3://outage/in/{paths[1].name}", outcome="loaded", timeout=120)
        assert watch.stop() == 0
        files = [e for e in watch.events() if e["event"] == "file"]
        # The first object was not read again: its ETag is unchanged.
        assert [(e["location"].rsplit("/", 1)[1], e["outcome"]) for e in files] == [
            (paths[0].name, "loaded"), (paths[1].name, "loaded")]
    finally:
        server.stop()


def test_a_missing_folder_is_refused_at_once(tmp_path):
    result = run_cli("watch", tmp_path / "nowhere", "--warehouse", tmp_path / "w.duckdb")
    assert result.code == 2 and "no such file or folder" in result.stderr


# The pollers on their own: the settle rule and the listing cursor --------------------


def test_a_local_file_is_ready_once_it_has_settled(tmp_path):
    from cafe_etl.watch.pollers import LocalPoller

    path = tmp_path / "leeds.csv"
    path.write_bytes(b"partial")
    written = path.stat().st_mtime
    poller = LocalPoller(str(tmp_path), settle=2.0)
    assert poller.poll({}, now=written + 0.5).settling == 1  # just written: wait
    path.write_bytes(b"partial, then more")  # still being written
    os.utime(path, (written + 1, written + 1))
    found = poller.poll({}, now=written + 1.5)
    assert (found.ready, found.settling) == ([], 1)  # it changed since the last look
    found = poller.poll({}, now=written + 2.0)
    assert [f.location for f in found.ready] == [str(path)]  # the same on two looks
    assert poller.poll({}, now=written + 60).ready  # or simply old enough
    known = {str(path): found.ready[0].etag}
    assert poller.poll(known, now=written + 60).ready == []  # settled in the ledger: not read again


def test_a_glob_that_matches_nothing_yet_is_not_an_outage(tmp_path):
    from cafe_etl.watch.pollers import LocalPoller

    assert LocalPoller(str(tmp_path / "*.csv"), settle=1).poll({}, now=time.time()).ready == []


def test_an_s3_poll_lists_from_the_newest_date_folder_unless_a_full_listing_is_due(bucket):
    from cafe_etl.watch.pollers import S3Poller

    for key in ("in/2024-03-04/a.csv", "in/2024-03-05/a.csv", "in/2024-03-05/b.csv"):
        bucket.put(key, b"x")
    poller = S3Poller(bucket.url("in/"), bucket.server.endpoint)
    first = poller.poll({}, now=time.time(), full=True)
    assert len(first.ready) == 3 and poller.cursor == "in/2024-03-05"
    known = {f.location: f.etag for f in first.ready}
    bucket.put("in/2024-03-04/late.csv", b"x")  # behind the cursor
    bucket.put("in/2024-03-05/c.csv", b"x")  # in the newest folder
    bucket.put("in/2024-03-06/a.csv", b"x")  # a new folder
    found = poller.poll(known, now=time.time())
    assert sorted(f.location for f in found.ready) == [bucket.url("in/2024-03-05/c.csv"),
                                                       bucket.url("in/2024-03-06/a.csv")]
    assert poller.cursor == "in/2024-03-06"
    known |= {f.location: f.etag for f in found.ready}
    full = poller.poll(known, now=time.time(), full=True)
    assert [f.location for f in full.ready] == [bucket.url("in/2024-03-04/late.csv")]


def test_keys_without_dates_are_listed_in_full_each_poll(bucket):
    from cafe_etl.watch.pollers import S3Poller

    bucket.put("flat/york.csv", b"x")
    poller = S3Poller(bucket.url("flat/"), bucket.server.endpoint)
    known = {f.location: f.etag for f in poller.poll({}, now=time.time(), full=True).ready}
    assert poller.cursor is None
    bucket.put("flat/aberdeen.csv", b"x")  # sorts before the newest key
    assert [f.location for f in poller.poll(known, now=time.time()).ready] == [bucket.url("flat/aberdeen.csv")]


def test_ctrl_c_stops_watch_cleanly(tmp_path, landing, watches):
    watch = Watch(tmp_path, str(landing), tmp_path / "w.duckdb")
    watches.append(watch)
    watch.wait_for_event("watching")
    watch.proc.send_signal(signal.SIGINT)
    assert watch.proc.wait(30) == 0
    assert [e["event"] for e in watch.events()][-2:] == ["stopping", "stopped"]
    assert watch.events()[-2]["signal"] == "SIGINT"
