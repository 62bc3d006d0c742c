"""The AWS Lambda handler with the events S3 really sends: the S3 server (moto) is
configured as in deploy/aws (bucket notification to a queue, or to EventBridge with
a rule to a queue), files are uploaded, and the messages that arrive are handed to
the handler the way Lambda's SQS trigger, S3 and EventBridge hand them over."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from tests.conftest import run_cli

BAD_LAYOUT = b"".join(b"a,b,c,d,e,f,g,h\n" for _ in range(5))  # 8 fields: not a branch export


class Queue:
    """An SQS queue on the test server, receiving the bucket's notifications."""

    def __init__(self, bucket, name: str) -> None:
        self.sqs = _client(bucket, "sqs")
        self.url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        self.arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"]

    def lambda_records(self, expect: int) -> list[dict]:
        """The waiting messages, shaped as Lambda's SQS trigger delivers them."""
        got: list[dict] = []
        for _ in range(20):
            reply = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                             AttributeNames=["All"])
            got += reply.get("Messages", [])
            if len(got) >= expect:
                break
        assert len(got) == expect, [m["Body"][:80] for m in got]
        return [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                 "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                 "eventSource": "aws:sqs", "eventSourceARN": self.arn, "awsRegion": "us-east-1"} for m in got]


def _client(bucket, service: str):
    import boto3
    from tests.conftest import _boto_credentials

    return boto3.client(service, endpoint_url=bucket.server.endpoint, **_boto_credentials())


def notifications_to_queue(bucket) -> Queue:
    queue = Queue(bucket, f"{bucket.name}-q")
    bucket.server.client().put_bucket_notification_configuration(Bucket=bucket.name, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue.arn, "Events": ["s3:ObjectCreated:*"],
                                 "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".csv"}]}}}]})
    return queue


def eventbridge_to_queue(bucket) -> Queue:
    queue = Queue(bucket, f"{bucket.name}-eb")
    events = _client(bucket, "events")
    rule = f"{bucket.name}-created"
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": ["aws.s3"], "detail-type": ["Object Created"],
                                                        "detail": {"bucket": {"name": [bucket.name]}}}))
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": queue.arn}])
    bucket.server.client().put_bucket_notification_configuration(
        Bucket=bucket.name, NotificationConfiguration={"EventBridgeConfiguration": {}})
    return queue


def configure(monkeypatch, bucket, warehouse_url: str) -> str:
    """The function's environment, as the deployment template sets it."""
    monkeypatch.setenv("CAFE_ETL_WAREHOUSE", warehouse_url)
    monkeypatch.setenv("CAFE_ETL_CUSTOMER_KEY", secrets.token_hex(32))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", bucket.server.endpoint)
    return warehouse_url


@pytest.fixture
def function_env(monkeypatch, bucket, tmp_path) -> str:
    return configure(monkeypatch, bucket, f"duckdb:///{tmp_path / 'warehouse.duckdb'}")


def handle(event: dict) -> dict:
    from cafe_etl.aws_lambda import handler

    return handler(event, None)


def report(url: str) -> dict:
    result = run_cli("report", "--warehouse", url, "--format", "json")
    assert result.code == 0, result.stderr
    return result.json()


def reference_report(tmp_path: Path, files: list[Path], extra: dict[str, bytes] | None = None) -> dict:
    """The same files ingested from a folder by the CLI into a DuckDB warehouse of their own."""
    folder = tmp_path / "reference"
    folder.mkdir()
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    for name, data in (extra or {}).items():
        (folder / name).write_bytes(data)
    warehouse = tmp_path / "reference.duckdb"
    assert run_cli("ingest", folder, "--warehouse", warehouse).code in (0, 1)
    return report(str(warehouse))


def test_an_sqs_batch_loads_good_files_and_reports_only_the_poison_one(generated, bucket, monkeypatch, tmp_path,
                                                                       warehouse_url):
    function_env = configure(monkeypatch, bucket, warehouse_url)
    queue = notifications_to_queue(bucket)  # also sends an s3:TestEvent
    good = sorted(generated.glob("*.csv"))[:3]
    for path in good:
        bucket.put(f"2024/{path.name}", path)
    bucket.put("2024/broken export.csv", BAD_LAYOUT)
    bucket.put("2024/notes.txt", b"not an export")  # filtered out by the notification
    records = queue.lambda_records(expect=5)

    reply = handle({"Records": records})
    bad = [r["messageId"] for r in records if "broken+export.csv" in r["body"] or "broken%20export" in r["body"]]
    assert reply["batchItemFailures"] == [{"itemIdentifier": bad[0]}]
    assert reply["outcomes"] == {"loaded": 3, "failed": 1}
    assert reply["failed"] == [bucket.url("2024/broken export.csv")]
    want = reference_report(tmp_path, good, {"broken export.csv": BAD_LAYOUT})
    assert report(function_env) == want

    # The platform redelivers the whole batch (say, after a timeout): nothing is loaded
    # twice, and the poison message fails again, on its way to the dead-letter queue.
    again = handle({"Records": records})
    assert again["batchItemFailures"] == [{"itemIdentifier": bad[0]}]
    assert again["outcomes"] == {"unchanged": 4}
    assert report(function_env) == want


def test_a_direct_s3_invocation_loads_url_encoded_keys(generated, bucket, function_env, tmp_path):
    queue = notifications_to_queue(bucket)
    path = sorted(generated.glob("*.csv"))[0]
    bucket.put("2024-03-04/Leeds Kirkgate+Market.csv", path)
    s3_events = [json.loads(r["body"]) for r in queue.lambda_records(expect=2)]
    [event] = [e for e in s3_events if "Records" in e]  # what S3 itself sends a function
    assert "Leeds+Kirkgate%2BMarket" in event["Records"][0]["s3"]["object"]["key"]
    reply = handle(event)
    assert reply["delivery"] == "s3" and reply["outcomes"] == {"loaded": 1}
    assert reply["files"][0]["location"] == bucket.url("2024-03-04/Leeds Kirkgate+Market.csv")
    assert report(function_env) == reference_report(tmp_path, [path])


def test_a_failed_file_in_a_direct_invocation_raises_for_a_retry(generated, bucket, function_env, tmp_path):
    from cafe_etl.aws_lambda import FilesFailed

    queue = notifications_to_queue(bucket)
    path = sorted(generated.glob("*.csv"))[0]
    bucket.put("a/good.csv", path)
    bucket.put("a/bad.csv", BAD_LAYOUT)
    records = [json.loads(r["body"]) for r in queue.lambda_records(expect=3)]
    event = {"Records": [rec for e in records for rec in e.get("Records", [])]}
    with pytest.raises(FilesFailed, match="bad.csv"):
        handle(event)
    assert report(function_env) == reference_report(tmp_path, [path], {"bad.csv": BAD_LAYOUT})  # the good file is in


@pytest.mark.parametrize("through_sqs", [False, True], ids=["direct", "via-sqs"])
def test_eventbridge_events_load_their_object(generated, bucket, function_env, tmp_path, through_sqs):
    queue = eventbridge_to_queue(bucket)
    path = sorted(generated.glob("*.csv"))[1]
    bucket.put("2024-03-05/york centre.csv", path)
    [record] = queue.lambda_records(expect=1)
    event = {"Records": [record]} if through_sqs else json.loads(record["body"])
    reply = handle(event)
    assert reply["delivery"] == ("sqs" if through_sqs else "eventbridge")
    assert reply["outcomes"] == {"loaded": 1} and reply.get("batchItemFailures", []) == []
    assert reply["files"][0]["location"] == bucket.url("2024-03-05/york centre.csv")
    assert report(function_env) == reference_report(tmp_path, [path])


def test_an_object_deleted_before_the_function_runs_is_not_a_failure(generated, bucket, function_env):
    queue = notifications_to_queue(bucket)
    bucket.put("x/gone.csv", sorted(generated.glob("*.csv"))[0])
    bucket.delete("x/gone.csv")
    records = queue.lambda_records(expect=2)
    reply = handle({"Records": records})
    assert reply["batchItemFailures"] == [] and reply["outcomes"] == {"gone": 1}


def test_a_message_that_is_not_an_event_fails_alone(generated, bucket, function_env):
    queue = notifications_to_queue(bucket)
    bucket.put("y/one.csv", sorted(generated.glob("*.csv"))[0])
    records = queue.lambda_records(expect=2)
    junk = dict(records[0], messageId="junk-1", body="this is not json")
    reply = handle({"Records": [*records, junk]})
    assert reply["batchItemFailures"] == [{"itemIdentifier": "junk-1"}]
    assert reply["outcomes"] == {"loaded": 1} and reply["bad_messages"] == 1


def test_an_unreachable_warehouse_fails_every_message_for_a_retry(generated, bucket, monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("CAFE_ETL_WAREHOUSE", f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    monkeypatch.setenv("CAFE_ETL_CUSTOMER_KEY", secrets.token_hex(32))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", bucket.server.endpoint)
    queue = notifications_to_queue(bucket)
    for name in ("a.csv", "b.csv"):
        bucket.put(f"z/{name}", sorted(generated.glob("*.csv"))[0])
    records = queue.lambda_records(expect=3)
    reply = handle({"Records": records})
    failing = {f["itemIdentifier"] for f in reply["batchItemFailures"]}
    assert failing == {r["messageId"] for r in records if "ObjectCreated" in r["body"]}
    assert all("cannot connect to the warehouse" in f["error"] for f in reply["files"])


def test_without_a_stable_customer_key_the_function_refuses(bucket, monkeypatch, tmp_path):
    from cafe_etl.errors import ConfigError

    monkeypatch.setenv("CAFE_ETL_WAREHOUSE", str(tmp_path / "w.duckdb"))
    monkeypatch.delenv("CAFE_ETL_CUSTOMER_KEY", raising=False)
    monkeypatch.setenv("CAFE_ETL_KEY_FILE", str(tmp_path / "no-such-key"))
    with pytest.raises(ConfigError, match="CAFE_ETL_CUSTOMER_KEY"):
        handle({"Records": []})


def test_concurrent_invocations_fan_out_into_one_postgres_warehouse(generated, bucket, monkeypatch, tmp_path,
                                                                    postgres_databases):
    """Three function instances at once, with overlapping batches (a redelivery racing
    the first delivery): every file is loaded exactly once."""
    import subprocess
    import sys

    url = postgres_databases.create()
    configure(monkeypatch, bucket, url)
    queue = notifications_to_queue(bucket)
    files = sorted(generated.glob("*.csv"))[:9]
    for path in files:
        bucket.put(f"fan/{path.name}", path)
    records = [r for r in queue.lambda_records(expect=10) if "ObjectCreated" in r["body"]]
    batches = [records[0:5], records[3:8], [*records[6:9], records[0]]]
    procs = []
    for n, batch in enumerate(batches):
        event_file = tmp_path / f"event-{n}.json"
        event_file.write_text(json.dumps({"Records": batch}))
        code = ("import json, sys; from cafe_etl.aws_lambda import handler; "
                "print(json.dumps(handler(json.load(open(sys.argv[1])))))")
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(event_file)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True))
    replies = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    retried = {f["itemIdentifier"] for r in replies for f in r["batchItemFailures"]}
    # A file another instance was still loading is retried later; the retry finds it done.
    if retried:
        again = handle({"Records": [r for r in records if r["messageId"] in retried]})
        assert again["batchItemFailures"] == []
    loaded = sum(r["outcomes"].get("loaded", 0) for r in replies)
    assert loaded == len(files)
    assert report(url) == reference_report(tmp_path, files)
    postgres_databases.drop(url)


def test_secrets_come_from_secrets_manager_not_the_function_configuration(generated, bucket, monkeypatch, tmp_path):
    from cafe_etl import aws_lambda

    warehouse = f"duckdb:///{tmp_path / 'from-secret.duckdb'}"
    secret = _client(bucket, "secretsmanager").create_secret(
        Name=f"{bucket.name}-etl", SecretString=json.dumps({"CAFE_ETL_CUSTOMER_KEY": secrets.token_hex(32),
                                                            "CAFE_ETL_WAREHOUSE": warehouse}))
    for name in ("CAFE_ETL_CUSTOMER_KEY", "CAFE_ETL_WAREHOUSE"):
        monkeypatch.setenv(name, "")  # recorded, so what the secret sets is undone after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket.server.endpoint)
    monkeypatch.setenv("CAFE_ETL_SECRET_ID", secret["ARN"])
    monkeypatch.setattr(aws_lambda, "_secret_loaded", [])
    queue = notifications_to_queue(bucket)
    path = sorted(generated.glob("*.csv"))[0]
    bucket.put("s/one.csv", path)
    reply = handle({"Records": queue.lambda_records(expect=2)})
    assert reply["outcomes"] == {"loaded": 1}
    assert report(warehouse) == reference_report(tmp_path, [path])

    monkeypatch.setenv("CAFE_ETL_SECRET_ID", "no-such-secret")
    with pytest.raises(aws_lambda.ConfigError, match="cannot read the secret no-such-secret"):
        handle({"Records": []})
