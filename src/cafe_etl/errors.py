"""Named errors. Each message says what went wrong and how to put it right.

``CafeEtlError`` and its subclasses are user-facing: the CLI prints their message
on one line and exits with ``exit_code``, never with a traceback; the web service
answers with ``http_status`` (and ``retry_after``), or hides a message that is not
for its clients (``http_status`` None: it may quote a query or a host).

No message shows a secret: ``redact`` takes the password out of every URL or
connection string in a text, and every message passes through it (here for these
errors; at the CLI, the logs and the web service for anything else they show).
"""

from __future__ import annotations

import re

# scheme://user:password@host → scheme://user:***@host (also when the URL is broken
# after the password, as in a mistyped scheme or an unclosed IPv6 bracket), and
# password=... in a libpq connection string or a URL's query.
_URL_PASSWORD = re.compile(r"(?i)([a-z][a-z0-9+.\-]*://[^:/@\s'\"]*):([^@\s'\"]*)@")
_PARAM_PASSWORD = re.compile(r"(?i)\b(password|passwd|pwd)\s*=\s*('[^']*'|\"[^\"]*\"|[^\s&'\"]+)")


def redact(text: str) -> str:
    """``text`` without the passwords of the URLs and connection strings it holds."""
    return _PARAM_PASSWORD.sub(r"\1=***", _URL_PASSWORD.sub(r"\1:***@", text))


class CafeEtlError(Exception):
    """A problem the user can fix; the message is shown as is, passwords redacted."""

    exit_code = 2
    http_status: int | None = None  # None: a message for the service log, not for clients
    retry_after: int | None = None  # seconds, for an answer that may come later

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(redact(str(message)), *args)


class ConfigError(CafeEtlError):
    """A setting or option has a value that cannot be used."""


class SourceError(CafeEtlError):
    """A landing-zone location cannot be listed or read."""


class WarehouseError(CafeEtlError):
    """The warehouse cannot be opened, read or written."""

    exit_code = 3


class WarehouseMissing(WarehouseError):
    """The warehouse has not been created yet: nothing has been ingested into it."""

    http_status = 503


class WarehouseOutdated(WarehouseError):
    """The warehouse was written by an older cafe-etl; a load upgrades it."""

    http_status = 503


class WarehouseBusy(WarehouseError):
    """Another process holds the warehouse; retrying later may succeed."""

    transient = True
    http_status = 503
    retry_after = 5


class QueryTimeout(WarehouseError):
    """A read ran past its time limit and was cancelled."""

    http_status = 504


class ResultTooLarge(CafeEtlError):
    """A read would return more rows than its limit allows."""

    http_status = 400


class BadRequest(CafeEtlError):
    """A request's parameters cannot be used (a bad filter, a name nothing matches)."""

    http_status = 400


class Overloaded(CafeEtlError):
    """The service is answering as many heavy requests as it may at once."""

    http_status = 503
    retry_after = 2


class ContentFault(Exception):
    """An unexpected error while a batch was transformed or loaded (an engine error, a
    value the warehouse refuses) that the content of one of its files may have caused.

    Never shown as is: the pipeline narrows the batch down to the file that causes it
    and fails that file alone with a sentence (``pipeline.settle``)."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage  # "transformed" or "loaded"
