"""AWS Lambda entry point: ``cafe_etl.aws_lambda.handler``.

Loads exactly the objects an event names into the warehouse configured by the
environment (``CAFE_ETL_WAREHOUSE``, e.g. a PostgreSQL or Redshift-compatible
URL; the customer-key secret in ``CAFE_ETL_CUSTOMER_KEY``). Three deliveries of an
S3 ``ObjectCreated`` notification are understood:

* S3 invoking the function directly (``Records[].s3``);
* through SQS (``Records[].body`` holding the S3 notification, possibly inside an
  SNS envelope, or an EventBridge event), the deployment in ``deploy/aws``;
* EventBridge invoking the function (``detail-type: Object Created``).

Secrets never sit in the function's configuration: with ``CAFE_ETL_SECRET_ID`` set,
the first invocation of a container reads that Secrets Manager secret, a JSON object
whose ``CAFE_ETL_CUSTOMER_KEY`` and ``PGPASSWORD`` (or ``CAFE_ETL_WAREHOUSE``) fill
the environment for the rest of the container's life.

Redelivery is harmless: the ledger knows every version it has settled. A message
fails, and is retried by the platform, when one of its files could not be read or
did not load (a file failed earlier keeps failing, so after the queue's retries it
rests in the dead-letter queue, where an alarm sees it). With SQS only the failing
messages are reported (``batchItemFailures``): a poison file never holds back the
others. Other deliveries raise, so the platform retries the whole event.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import unquote_plus

from cafe_etl import logs
from cafe_etl.config import load_settings
from cafe_etl.errors import CafeEtlError, ConfigError
from cafe_etl.pipeline.results import FileOutcome
from cafe_etl.rules import FileStatus
from cafe_etl.sources import s3

log = logging.getLogger(logs.LOGGER_NAME)
SETTLED = (FileStatus.LOADED, FileStatus.SKIPPED)  # ledger states in which a file needs nothing more


class EventError(CafeEtlError):
    """The event is not one this handler understands."""


class FilesFailed(Exception):
    """Raised for non-SQS deliveries so the platform retries the event."""


@dataclass
class Message:
    """One unit the platform can retry: an SQS message, or the whole event otherwise."""

    message_id: str | None
    locations: list[str] = field(default_factory=list)
    error: str | None = None  # the message could not be understood


# Reading events -----------------------------------------------------------------------


def messages(event: dict[str, Any]) -> tuple[str, list[Message]]:
    """The event's kind ("sqs", "s3" or "eventbridge") and the objects in each message."""
    if event.get("detail-type") or event.get("source") == "aws.s3":
        return "eventbridge", [Message(None, list(_from_eventbridge(event)))]
    records = event.get("Records")
    if not isinstance(records, list):
        raise EventError("not an S3, SQS or EventBridge event: no Records and no detail-type")
    if records and all(r.get("eventSource") == "aws:sqs" for r in records):
        return "sqs", [_sqs_message(r) for r in records]
    return "s3", [Message(None, list(_from_notification(event)))]


def _sqs_message(record: dict[str, Any]) -> Message:
    try:
        return Message(record.get("messageId"), list(_from_body(record.get("body", ""))))
    except (EventError, KeyError, TypeError, ValueError) as exc:
        reason = str(exc) if isinstance(exc, EventError) else f"an SQS message without the expected fields ({exc!r})"
        return Message(record.get("messageId"), error=reason)


def _from_notification(notification: dict[str, Any]) -> Iterator[str]:
    for record in notification.get("Records", ()):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue  # deletions, restores, ...: nothing to load
        bucket = record["s3"]["bucket"]["name"]
        # Notification keys are URL-encoded, a space as '+'.
        yield f"s3://{bucket}/{unquote_plus(record['s3']['object']['key'])}"


def _from_eventbridge(event: dict[str, Any]) -> Iterator[str]:
    if event.get("detail-type") != "Object Created":
        return
    detail = event.get("detail") or {}
    yield f"s3://{detail['bucket']['name']}/{detail['object']['key']}"  # not URL-encoded here


def _from_body(body: str) -> Iterator[str]:
    try:
        payload = json.loads(body)
    except json.JSONDecodeError:
        raise EventError("an SQS message body that is not JSON") from None
    if payload.get("Type") == "Notification" and "Message" in payload:  # an SNS envelope
        payload = json.loads(payload["Message"])
    if payload.get("Event") == "s3:TestEvent":
        return  # sent once when the notification is configured
    if payload.get("detail-type"):
        yield from _from_eventbridge(payload)
    else:
        yield from _from_notification(payload)


# Handling ---------------------------------------------------------------------------


SECRET_ID = "CAFE_ETL_SECRET_ID"
SECRET_KEYS = ("CAFE_ETL_CUSTOMER_KEY", "PGPASSWORD", "CAFE_ETL_WAREHOUSE")
_secret_loaded: list[str] = []


def load_secret() -> None:
    """Fill the environment from the Secrets Manager secret named by CAFE_ETL_SECRET_ID, once."""
    secret_id = os.environ.get(SECRET_ID)
    if not secret_id or secret_id in _secret_loaded:
        return
    import boto3

    try:
        text = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
        values = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any failure here is a configuration problem, said once
        raise ConfigError(f"cannot read the secret {secret_id}: {type(exc).__name__}: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"the secret {secret_id} must be a JSON object with {', '.join(SECRET_KEYS)}")
    for key in SECRET_KEYS:
        if values.get(key):
            os.environ[key] = str(values[key])
    _secret_loaded.append(secret_id)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    logs.setup("json")
    load_secret()
    settings = load_settings()
    if settings.customer_keys and not settings.customer_key and not settings.key_file.exists():
        # A key made up inside one container would differ from the next one's, and
        # returning customers would look new: refuse rather than load wrong figures.
        raise ConfigError("set CAFE_ETL_CUSTOMER_KEY (hex, from a secret store) so every invocation derives the "
                          "same customer keys, or CAFE_ETL_CUSTOMER_KEYS=off")
    try:
        kind, batch = messages(event)
    except (KeyError, TypeError) as exc:
        raise EventError(f"an event without the expected fields ({exc!r})") from None
    for m in batch:
        if m.error:
            logs.event(log, "bad message", logging.ERROR, message_id=m.message_id, error=m.error)
    outcomes = _load(batch, settings)
    failed = [m for m in batch if m.error or any(_needs_retry(outcomes[loc]) for loc in m.locations)]
    summary = _summary(kind, batch, outcomes, failed)
    logs.event(log, "handled", **{k: v for k, v in summary.items() if k != "files"})
    if kind == "sqs":
        return {"batchItemFailures": [{"itemIdentifier": m.message_id} for m in failed]} | summary
    if failed:
        raise FilesFailed(f"{len(summary['failed'])} file(s) not loaded: {', '.join(summary['failed'])}")
    return summary


def _load(batch: list[Message], settings) -> dict[str, FileOutcome]:
    """Every location's outcome. All messages are loaded in one run; if that run breaks
    (the warehouse is down, say), each message is tried on its own, so one bad message
    is told apart from the rest."""
    try:
        return _ingest([loc for m in batch for loc in m.locations], settings)
    except Exception as exc:  # noqa: BLE001 - isolate the messages before giving up on any
        if len(batch) == 1:
            return _all_failed(batch[0].locations, exc)
        outcomes: dict[str, FileOutcome] = {}
        for m in batch:
            try:
                outcomes |= _ingest(m.locations, settings)
            except Exception as one:  # noqa: BLE001
                outcomes |= _all_failed(m.locations, one)
        return outcomes


def _ingest(locations: list[str], settings) -> dict[str, FileOutcome]:
    from cafe_etl.pipeline.run import ingest

    found, outcomes = [], {}
    for location in dict.fromkeys(locations):
        if not s3.is_export(location.rsplit("/", 1)[-1]):
            outcomes[location] = FileOutcome(location, "ignored", ledger_status=FileStatus.SKIPPED)
            continue
        landing = s3.at(location, settings.s3_endpoint_url)
        if landing is None:  # deleted since the event: nothing to load
            outcomes[location] = FileOutcome(location, "gone", ledger_status=FileStatus.SKIPPED)
        else:
            found.append(landing)
    if found:
        summary = ingest([], settings, command="lambda", files=found, batch_done=partial(logs.file_outcomes, log))
        outcomes |= {f.location: f for f in summary.files}
    return outcomes


def _all_failed(locations: list[str], exc: BaseException) -> dict[str, FileOutcome]:
    error = str(exc) if isinstance(exc, CafeEtlError) else f"{type(exc).__name__}: {exc}"
    logs.event(log, "batch failed", logging.ERROR, files=len(locations), error=error)
    return {loc: FileOutcome(loc, "failed", error=error, unreadable=True) for loc in locations}


def _needs_retry(outcome: FileOutcome) -> bool:
    return outcome.unreadable or outcome.ledger_status not in SETTLED


def _summary(kind: str, batch: list[Message], outcomes: dict[str, FileOutcome],
             failed: list[Message]) -> dict[str, Any]:
    files = [outcomes[loc] for loc in dict.fromkeys(loc for m in batch for loc in m.locations)]
    counts: dict[str, int] = {}
    for f in files:
        counts[f.outcome] = counts.get(f.outcome, 0) + 1
    return {
        "delivery": kind,
        "messages": len(batch),
        "failed_messages": len(failed),
        "bad_messages": sum(1 for m in batch if m.error),
        "outcomes": counts,
        "rows_loaded": sum(f.rows_loaded for f in files),
        "rows_rejected": sum(f.rows_rejected for f in files),
        "failed": [f.location for f in files if _needs_retry(f)],
        "files": [{"location": f.location, "outcome": f.outcome, "file_id": f.file_id, "rows_loaded": f.rows_loaded,
                   "rows_rejected": f.rows_rejected, "error": f.error} for f in files],
    }
