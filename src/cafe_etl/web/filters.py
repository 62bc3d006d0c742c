"""The dashboard's filters: a date range and branches, checked before any query runs.

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

DEFAULT_DAYS = report.RECENT_DAYS  # the period shown when none is asked for: the latest four weeks with data
MAX_DAYS = 3 * 366  # a longer range is almost surely a typing mistake, and costly to answer
MAX_BRANCH_NAME = 200


class BadFilter(BadRequest):
    """A filter value the dashboard cannot use."""


MAX_BRANCHES = 100  # chosen at once; beyond that, all branches is the question


@dataclass(frozen=True)
class PeriodFilters:
    first: date | None = None
    last: date | None = None
    branches: tuple[str, ...] = ()  # none: the whole chain

    @property
    def branch(self) -> str | list[str] | None:
        """As answers name the choice: the branch, the list of several, or None for the chain."""
        if not self.branches:
            return None
        return self.branches[0] if len(self.branches) == 1 else list(self.branches)

    @property
    def chosen(self) -> str | tuple[str, ...] | None:
        """As ``report.Filters`` takes them."""
        return self.branches or None

    def cache_key(self) -> tuple:
        return (self.first, self.last, tuple(sorted({report.branch_identity(b) for b in self.branches})))


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


def parse(first: str | None, last: str | None, branch: str | list[str] | None) -> PeriodFilters:
    """``branch``: one name, or several (``?branch=A&branch=B``); empty ones are ignored."""
    first_day, last_day = parse_day(first, "from"), parse_day(last, "to")
    if first_day and last_day:
        check_period(first_day, last_day)
    given = [branch] if isinstance(branch, str) else list(branch or [])
    names = tuple(dict.fromkeys(name.strip() for name in given if name and name.strip()))
    if any(len(name) > MAX_BRANCH_NAME for name in names):
        raise BadFilter("the branch name is too long")
    if len(names) > MAX_BRANCHES:
        raise BadFilter(f"at most {MAX_BRANCHES} branches can be chosen at once: choose all branches instead")
    return PeriodFilters(first_day, last_day, names)


def scope(reader: Reader, filters: PeriodFilters) -> report.Scope:
    """The filters resolved against the warehouse as every insight resolves them
    (``report.recent``): without dates, the latest ``DEFAULT_DAYS`` days that have
    sales. An unknown branch, or ends that cross, raise ``BadFilter``."""
    try:
        resolved = report.recent(reader, report.Filters(filters.first, filters.last, filters.chosen), DEFAULT_DAYS)
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
