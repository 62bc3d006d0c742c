"""The vocabulary of the rules in DESIGN §3 and §4: reason codes, file statuses,
placeholders, sizes.

Reason codes and file statuses are a contract (dashboards and alerts count them):
add new ones, never rename or reuse one.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum


class Reason(StrEnum):
    BAD_FIELD_COUNT = "BAD_FIELD_COUNT"
    BAD_TIMESTAMP = "BAD_TIMESTAMP"
    MISSING_BRANCH = "MISSING_BRANCH"
    EMPTY_BASKET = "EMPTY_BASKET"
    BAD_ITEM = "BAD_ITEM"
    BAD_PRICE = "BAD_PRICE"
    BAD_TOTAL = "BAD_TOTAL"
    TOTAL_MISMATCH = "TOTAL_MISMATCH"
    BAD_PAYMENT = "BAD_PAYMENT"
    DUPLICATE_ROW = "DUPLICATE_ROW"
    BRANCH_MISMATCH = "BRANCH_MISMATCH"


class FileStatus(StrEnum):
    """A file version's status in the ledger (``etl_file.status``, DESIGN §4)."""

    LOADING = "loading"  # claimed by a run that is processing it
    LOADED = "loaded"  # its rows are in the warehouse
    FAILED = "failed"  # nothing of it is: the file as a whole could not be used
    SKIPPED = "skipped"  # a copy of content already known at another location
    REPLACED = "replaced"  # a newer version at the same location took its place

    @classmethod
    def done(cls) -> tuple[FileStatus, ...]:
        """Settled: a later run leaves the version alone unless told to process it again."""
        return (cls.LOADED, cls.FAILED, cls.SKIPPED)


class RunStatus(StrEnum):
    """A run's status (``etl_run.status``)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"  # every file it took was loaded or skipped
    FAILED = "failed"  # a file failed, or the run itself stopped on an error
    STOPPED = "stopped"  # asked to stop: batches not started were left for the next run


# Written by tills and spreadsheets where a value is missing; compared upper-cased.
PLACEHOLDERS = ("", "N/A", "NA", "NONE", "NULL", "-", "MISSING")

# The closed list of cup sizes, as the tills spell them.
SIZES = ("Regular", "Large")

PAYMENT_METHODS = ("CASH", "CARD")

EXPECTED_FIELDS = 7

# A branch or product name (with its flavour) longer than this is not a name.
MAX_NAME_CHARS = 100

# V1 writes DD/MM/YYYY HH:MM (spreadsheets drop the zero padding); the legacy V0
# export writes ISO timestamps with seconds. Day first, always.
TIMESTAMP_FORMATS = (
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
)
TIMESTAMP_FORMATS_SQL = "[" + ", ".join(f"'{f}'" for f in TIMESTAMP_FORMATS) + "]"


class Layout(StrEnum):
    """The shape of a file's rows, detected from their content."""

    V1 = "v1"  # canonical: time, branch, customer, basket, total, payment, card
    V0 = "v0-legacy"  # Isle of Wight: time, branch, customer, basket triples, payment, total, card


# Days a period may name, on every surface (CLI and dashboard): far enough either way
# for any real question, and far from the ends of the calendar, where "the previous
# period" or "the day after" overflow.
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(2999, 12, 31)
