"""The ledger's decisions: what to do with each file read in this run (DESIGN §4).

Same location and content: unchanged, skipped. Same content at another location:
a copy, skipped and recorded. New content at a known location: processed, and on
success it replaces the loaded version. A version left ``loading`` by a crashed
run, or re-uploaded after being replaced, is processed again under its own id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cafe_etl.pipeline.batch import ReadFile
from cafe_etl.warehouse.base import LedgerEntry

DONE = ("loaded", "failed", "skipped")


@dataclass
class Planned:
    read: ReadFile
    file_id: int | None = None  # known already (a retry), or assigned when claimed
    replaces: int | None = None


@dataclass
class Plan:
    process: list[Planned] = field(default_factory=list)
    unchanged: list[tuple[ReadFile, LedgerEntry]] = field(default_factory=list)
    copies: list[tuple[ReadFile, int | ReadFile]] = field(default_factory=list)  # original id, or in-batch file


def plan(files: list[ReadFile], known: list[LedgerEntry], run_id: int | None,
         redo: frozenset[int] = frozenset()) -> Plan:
    """``redo``: versions to process again although done (``replay``, after a rule fix)."""
    by_version = {(e.location, e.sha256): e for e in known}
    loaded_at = {e.location: e.file_id for e in known if e.status == "loaded"}
    known_content = {}
    for e in known:
        # A version claimed earlier in this same run is being loaded right now.
        if e.status in ("loaded", "replaced") or (e.status == "loading" and e.run_id == run_id):
            known_content.setdefault(e.sha256, e.file_id)
    out = Plan()
    in_batch: dict[str, ReadFile] = {}
    for f in files:
        location, sha = f.source.location, f.sha256
        entry = by_version.get((location, sha))
        current = loaded_at.get(location)
        if entry is not None and entry.status in DONE and entry.file_id not in redo:
            out.unchanged.append((f, entry))
        elif entry is not None:  # loading (a crashed run's claim) or replaced (the content came back)
            out.process.append(Planned(f, entry.file_id, current if current != entry.file_id else None))
        elif sha in known_content:
            out.copies.append((f, known_content[sha]))
        elif sha in in_batch:
            out.copies.append((f, in_batch[sha]))
        else:
            in_batch[sha] = f
            out.process.append(Planned(f, None, current))
    return out
