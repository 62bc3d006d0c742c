"""Named errors. Each message says what went wrong and how to put it right.

``CafeEtlError`` and its subclasses are user-facing: the CLI prints their message
on one line and exits non-zero, never with a traceback.
"""

from __future__ import annotations


class CafeEtlError(Exception):
    """A problem the user can fix; the message is shown as is."""

    exit_code = 2


class ConfigError(CafeEtlError):
    """A setting or option has a value that cannot be used."""


class SourceError(CafeEtlError):
    """A landing-zone location cannot be listed or read."""


class WarehouseError(CafeEtlError):
    """The warehouse cannot be opened, read or written."""

    exit_code = 3


class WarehouseMissing(WarehouseError):
    """The warehouse has not been created yet: nothing has been ingested into it."""


class WarehouseBusy(WarehouseError):
    """Another process holds the warehouse; retrying later may succeed."""

    transient = True


class QueryTimeout(WarehouseError):
    """A read ran past its time limit and was cancelled."""


class ResultTooLarge(CafeEtlError):
    """A read would return more rows than its limit allows."""


class ContentFault(Exception):
    """An unexpected error while a batch was transformed or loaded (an engine error, a
    value the warehouse refuses) that the content of one of its files may have caused.

    Never shown as is: the pipeline narrows the batch down to the file that causes it
    and fails that file alone with a sentence (``pipeline.settle``)."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage  # "transformed" or "loaded"
