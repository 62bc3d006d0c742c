"""A filter that names nothing the warehouse knows is a mistake, not an empty answer.

``rejects --reason NOT_A_REASON`` or ``replay --branch Atlantis`` would otherwise
print nothing and leave the user guessing whether the data is clean or the name is
wrong. Each check says what is unknown and, where a known name is close, suggests it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from cafe_etl.analytics.report import UnknownBranch, branch_identity
from cafe_etl.errors import BadRequest
from cafe_etl.rules import Reason
from cafe_etl.warehouse.base import Reader


class UnknownName(BadRequest):
    """A filter names nothing in the warehouse."""


def _suggest(wanted: str, known: Iterable[str], listing: str) -> str:
    known = sorted(set(known))
    close = difflib.get_close_matches(wanted, known, n=3, cutoff=0.6)
    if close:
        return f"; did you mean {', '.join(close)}?"
    return f"; {listing}" if known else ""


def reason_code(reader: Reader, value: str) -> str:
    """The reason code ``value`` names (any case): one of the rules' codes or one the
    warehouse holds."""
    wanted = value.strip().upper()
    known = {str(r) for r in Reason} | {code for (code,) in reader.query(
        "SELECT DISTINCT reason_code FROM etl_reject")}
    if wanted in known:
        return wanted
    raise UnknownName(f"unknown reason code {value!r}"
                      + _suggest(wanted, known, "the codes are " + ", ".join(sorted(known))))


def file_filter(reader: Reader, value: str) -> None:
    """``value`` is a ledger file id, or part of the location of a file the ledger knows."""
    if value.isdigit():
        if reader.scalar("SELECT count(*) FROM etl_file WHERE file_id = ?", [int(value)]):
            return
        raise UnknownName(f"no file with id {value} in the warehouse (`cafe-etl status` lists the files)")
    if reader.scalar("SELECT count(*) FROM etl_file WHERE location LIKE ?", [f"%{value}%"]):
        return
    names = [location.rsplit("/", 1)[-1] for (location,) in reader.query("SELECT location FROM etl_file")]
    raise UnknownName(f"no file in the warehouse matches {value!r}"
                      + _suggest(value.rsplit("/", 1)[-1], names, f"{len(set(names))} files are known"))


def branch(reader: Reader, value: str) -> None:
    """``value`` names a branch the warehouse knows (any case, extra spaces ignored):
    one with sales, or one named by a file that failed."""
    wanted = branch_identity(value)
    names = {name: branch_id for branch_id, name in reader.query("SELECT branch_id, name FROM dim_branch")}
    ids = set(names.values()) | {b for (b,) in reader.query(
        "SELECT DISTINCT branch_id FROM etl_file WHERE branch_id IS NOT NULL")}
    if wanted in ids:
        return
    raise UnknownBranch(f"unknown branch {value!r}"
                        + _suggest(value, list(names) or ids, f"{len(ids)} branches are known"))
