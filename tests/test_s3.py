"""S3 as a landing zone, against a real HTTP endpoint (moto's server): listing,
streaming, the ledger's ETags, skip/replace semantics and clear errors."""

from __future__ import annotations

import pytest
from tests.conftest import SAMPLES, by_day, free_port, run_cli
from tests.test_samples import EXPECTED as SAMPLE_COUNTS


def ingest(bucket, warehouse, *sources, extra=()):
    result = run_cli("ingest", *sources, "--warehouse", warehouse, "--json", *extra, env=bucket.env)
    assert result.code in (0, 1), result.stderr
    return result.json()


def report(warehouse) -> dict:
    result = run_cli("report", "--warehouse", warehouse, "--format", "json")
    assert result.code == 0, result.stderr
    return result.json()


def upload_by_day(bucket, generated) -> int:
    """The generated chain under date-prefixed keys, as branches upload it: 2024-03-04/x.csv."""
    count = 0
    for day, paths in by_day(generated).items():
        for path in paths:
            bucket.put(f"exports/{day}/{path.name}", path)
            count += 1
    return count


def ledger(warehouse) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute("SELECT location, status, etag, content_sha256, size_bytes FROM etl_file "
                           "ORDER BY file_id").fetchall()


def test_a_bucket_prefix_loads_exactly_the_generators_truth(bucket, generated, expected, warehouse):
    files = upload_by_day(bucket, generated)
    bucket.put("exports/_expected.json", b"{}")  # not an export: ignored
    summary = ingest(bucket, warehouse, bucket.url("exports/"))
    assert summary["files"]["loaded"] == files == expected["files"]
    assert report(warehouse) == expected["report"]
    locations = {row[0] for row in ledger(warehouse)}
    assert all(loc.startswith(f"s3://{bucket.name}/exports/20") for loc in locations)


def test_the_ledger_keeps_each_objects_etag_and_content_hash(bucket, generated, warehouse):
    import hashlib

    path = sorted(generated.glob("*.csv"))[0]
    bucket.put("a/one.csv", path)
    ingest(bucket, warehouse, bucket.url("a/one.csv"))
    [(location, status, etag, sha, size)] = ledger(warehouse)
    data = path.read_bytes()
    assert (location, status, size) == (bucket.url("a/one.csv"), "loaded", len(data))
    assert etag == hashlib.md5(data).hexdigest()  # a single-part upload's ETag is its MD5
    assert sha == hashlib.sha256(data).hexdigest()


def test_real_samples_from_a_bucket_give_their_exact_counts(bucket, warehouse):
    for path in sorted(SAMPLES.rglob("*.csv")):
        bucket.put(f"samples/{path.relative_to(SAMPLES).as_posix()}", path)
    summary = ingest(bucket, warehouse, bucket.url("samples"))
    got = {f["location"].split("/samples/", 1)[1]: (f["outcome"], f["rows_loaded"], f["rows_rejected"])
           for f in summary["file_results"]}
    want = {name: ("loaded", loaded, rejected) for name, (_, loaded, rejected, *_) in SAMPLE_COUNTS.items()}
    assert got == want


def test_reuploads_are_skipped_replaced_or_recorded_as_copies(bucket, generated, warehouse):
    first, second = sorted(generated.glob("*.csv"))[:2]
    bucket.put("d/branch.csv", first)
    ingest(bucket, warehouse, bucket.url("d/"))
    before = report(warehouse)

    bucket.put("d/branch.csv", first)  # the same bytes again
    assert ingest(bucket, warehouse, bucket.url("d/"))["files"]["unchanged"] == 1
    assert report(warehouse) == before

    bucket.put("d/renamed.csv", first)  # the same bytes under another key
    assert ingest(bucket, warehouse, bucket.url("d/"))["files"]["copy"] == 1
    assert report(warehouse) == before

    bucket.put("d/branch.csv", second)  # new content at the same key replaces the old rows
    summary = ingest(bucket, warehouse, bucket.url("d/"))
    assert summary["files"]["reloaded"] == 1
    after = report(warehouse)
    lines = [line for line in second.read_text().splitlines() if line.strip()]
    assert after["totals"]["transactions"] + after["quality"]["rows_rejected"] == len(lines)
    statuses = [(loc.rsplit("/", 1)[1], status) for loc, status, *_ in ledger(warehouse)]
    assert statuses == [("branch.csv", "replaced"), ("renamed.csv", "skipped"), ("branch.csv", "loaded")]


def test_thousands_of_objects_are_listed_page_by_page(bucket):
    from concurrent.futures import ThreadPoolExecutor

    from cafe_etl.sources import s3

    # More exports than one listing page holds (1,000 keys), and some other objects.
    client = bucket.server.client()
    keys = [f"many/{n:05d}.csv" for n in range(1050)] + ["many/notes.txt", "many/.hidden.csv"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket.name, Key=key, Body=b"x"), keys))
    found = list(s3.discover(bucket.url("many/"), bucket.server.endpoint))
    assert [f.location for f in found] == [bucket.url(k) for k in keys[:1050]]
    assert {f.size for f in found} == {1} and all(f.etag for f in found)


@pytest.mark.parametrize("source, message", [
    ("s3://no-such-bucket-here/x/", "bucket no-such-bucket-here does not exist"),
    ("{bucket}/missing.csv", "no object at"),
    ("s3:///nothing", "not an S3 location"),
])
def test_s3_mistakes_are_one_clear_line(bucket, warehouse, source, message):
    source = source.replace("{bucket}", bucket.url().rstrip("/"))
    result = run_cli("ingest", source, "--warehouse", warehouse, env=bucket.env)
    assert result.code == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_endpoint_is_one_clear_line(warehouse):
    result = run_cli("ingest", "s3://landing/x/", "--warehouse", warehouse,
                     "--s3-endpoint-url", f"http://127.0.0.1:{free_port()}", timeout=120)
    assert result.code == 2
    assert "cannot reach the S3 endpoint" in result.stderr and "Traceback" not in result.stderr


def test_denied_access_is_explained(monkeypatch):
    from botocore.exceptions import ClientError

    from cafe_etl.sources import s3

    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "ListObjectsV2")
    assert str(s3._explain(denied, "s3://private/x/")) == (
        "access denied to s3://private/x/: check the credentials and the bucket policy")
