"""The PII audit: look for card numbers where none may be.

Every text column of the warehouse (the quarantine included), and any text file
named (logs, exports), is searched for runs of 13–19 digits, spaces or dashes
allowed between them, that pass the Luhn check, as payment card numbers do. A
finding is reported by where it is and the number's last four digits only.

Customer names cannot be recognised in general; the tests check for the known
names of their inputs instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cafe_etl.errors import SourceError
from cafe_etl.warehouse.base import Reader

# A digit, then 12 to 18 more, each perhaps after one space or dash.
CANDIDATE = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
SQL_PATTERN = "[0-9]([ -]?[0-9]){12,18}"
# Fingerprints, not data: hex digests and object-store version tags.
SKIPPED_COLUMNS = {"content_sha256", "etag"}


@dataclass(frozen=True)
class Finding:
    where: str  # table.column, or a file path with its line
    last4: str

    def describe(self) -> str:
        return f"{self.where}: a card-like number ending {self.last4}"


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_numbers(text: str) -> Iterator[str]:
    """The Luhn-valid 13–19 digit numbers in ``text``, separators removed."""
    for match in CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield digits


def text_columns(reader: Reader) -> list[tuple[str, str]]:
    rows = reader.query(
        """SELECT c.table_name, c.column_name FROM information_schema.columns c
           JOIN information_schema.tables t ON t.table_name = c.table_name AND t.table_schema = c.table_schema
           WHERE c.table_schema IN ('main', 'public') AND t.table_type = 'BASE TABLE'
             AND lower(c.data_type) IN ('varchar', 'character varying', 'text')
           ORDER BY c.table_name, c.column_name""")
    return [(table, column) for table, column in rows if column not in SKIPPED_COLUMNS]


def scan_warehouse(reader: Reader) -> tuple[int, list[Finding]]:
    """(columns scanned, findings). Only values with a long digit run leave the warehouse."""
    columns = text_columns(reader)
    findings = []
    for table, column in columns:
        # Names come from the catalog, not from a user; values are matched by a bound pattern.
        where = reader.regex_match(f'"{column}"')
        for (value,) in reader.query(f'SELECT DISTINCT "{column}" FROM "{table}" WHERE {where}', [SQL_PATTERN]):
            findings += [Finding(f"{table}.{column}", digits[-4:]) for digits in card_numbers(value)]
    return len(columns), findings


def scan_files(paths: Iterable[Path]) -> list[Finding]:
    findings = []
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                for number, line in enumerate(handle, 1):
                    findings += [Finding(f"{path}:{number}", digits[-4:]) for digits in card_numbers(line)]
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    return findings
