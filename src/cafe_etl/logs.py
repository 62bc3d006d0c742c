"""Structured log lines for the long-running services (``watch``, the Lambda handler).

Each line is one event with named fields: ``--log-format json`` gives one JSON object
per line for a log pipeline (CloudWatch, Loki, journald), ``text`` a readable
``key=value`` line. Fields never carry row data, so no personal data reaches a log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from cafe_etl.errors import redact

LOGGER_NAME = "cafe_etl"
FORMATS = ("text", "json")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": _timestamp(record), "level": record.levelname.lower(), "event": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        return redact(json.dumps(line, default=str, separators=(",", ":")))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={_text(value)}" for key, value in getattr(record, "fields", {}).items()
                          if value is not None)
        return redact(f"{_timestamp(record)} {record.levelname.lower():<7} {record.getMessage()} {fields}".rstrip())


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(ch in text for ch in ' "=') else text


def setup(log_format: str = "text", stream=None, level: int = logging.INFO) -> logging.Logger:
    """The project's logger, writing one line per event to ``stream`` (stderr by default)."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, name, extra={"fields": fields})


def file_outcomes(logger: logging.Logger, outcomes) -> None:
    """One line per file of a run: location, outcome, rows, seconds (and why, if it failed)."""
    for f in outcomes:
        event(logger, "file", logging.WARNING if f.outcome == "failed" else logging.INFO,
              location=f.location, outcome=f.outcome, rows=f.rows_read, rows_loaded=f.rows_loaded,
              rows_rejected=f.rows_rejected, seconds=round(f.seconds, 3), file_id=f.file_id, error=f.error)
