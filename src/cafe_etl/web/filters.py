"""The dashboard's filters: a date range and a branch, checked before any query runs.

A bad value is the caller's mistake, answered with 400 and a sentence saying what
is wrong; it never reaches SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from cafe_etl.analytics import operations, report
from cafe_etl.errors import BadRequest
from cafe_etl.rules import FIRST_DAY, LAST_DAY
from cafe_etl.warehouse.base import Reader

DEFAULT_DAYS = 28  # the period shown when none is asked for: the latest four weeks with data
MAX_DAYS = 3 * 366  # a longer range is almost surely a typing mistake, and costly to answer
MAX_BRANCH_NAME = 200


class BadFilter(BadRequest):
    """A filter value the dashboard cannot use."""


@dataclass(frozen=True)
class PeriodFilters:
    first: date | None = None
    last: date | None = None
    branch: str | None = None

    def cache_key(self) -> tuple:
        return (self.first, self.last, report.branch_identity(self.branch) if self.branch else None)


def parse_day(value: str | None, name: str) -> date | None:
    if value is None or value.strip() == "":
        return None
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise BadFilter(f"{name} must be a date written YYYY-MM-DD, not {value[:40]!r}") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise BadFilter(f"{name} must be a day between {FIRST_DAY} and {LAST_DAY}, not {day}")
    return day


def check_period(first: date, last: date) -> None:
    """A period the service answers: in order, and at most ``MAX_DAYS`` long."""
    if first > last:
        raise BadFilter(f"from ({first}) is after to ({last})")
    if (last - first).days + 1 > MAX_DAYS:
        raise BadFilter(f"the period from {first} to {last} is longer than {MAX_DAYS} days: choose a shorter one")


def parse(first: str | None, last: str | None, branch: str | None) -> PeriodFilters:
    first_day, last_day = parse_day(first, "from"), parse_day(last, "to")
    if first_day and last_day:
        check_period(first_day, last_day)
    name = branch.strip() if branch else None
    if name and len(name) > MAX_BRANCH_NAME:
        raise BadFilter("the branch name is too long")
    return PeriodFilters(first_day, last_day, name or None)


def scope(reader: Reader, filters: PeriodFilters) -> report.Scope:
    """The filters resolved against the warehouse as every insight resolves them
    (``report.recent``): without dates, the latest ``DEFAULT_DAYS`` days that have
    sales. An unknown branch, or ends that cross, raise ``BadFilter``."""
    try:
        resolved = report.recent(reader, report.Filters(filters.first, filters.last, filters.branch), DEFAULT_DAYS)
    except (report.UnknownBranch, report.BadPeriod) as exc:
        raise BadFilter(str(exc)) from None
    if not resolved.empty:
        check_period(resolved.first, resolved.last)  # with the ends the data filled in
    return resolved


def operations_period(reader: Reader, wanted: PeriodFilters) -> tuple[date | None, date | None]:
    """The operations page's period: as asked, or the latest ``DEFAULT_DAYS`` business
    days the ledger knows."""
    low, high = operations.ledger_window(reader)
    last = wanted.last or high
    first = wanted.first or (max(low, last - timedelta(days=DEFAULT_DAYS - 1)) if low and last else None)
    if first and last:
        check_period(first, last)
    return first, last


def choices(reader: Reader) -> dict:
    """What the filters can choose from: every branch, and the first and last day with sales."""
    counts = operations.warehouse_counts(reader)
    return {"branches": [row[0] for row in reader.query("SELECT name FROM dim_branch ORDER BY name")],
            "first_day": counts["first_sale"], "last_day": counts["last_sale"]}
