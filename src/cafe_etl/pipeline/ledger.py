"""The ledger's decisions: what to do with each file read in this run (DESIGN §4).

Same location and content: unchanged, skipped. Same content at another location:
a copy, skipped and recorded. New content at a known location: processed, and on
success it replaces the loaded version. A version claimed by another loader that is
still at work is left to it; a claim whose loader died (its lease ran out), or a
version re-uploaded after being replaced, is processed again under its own id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cafe_etl.pipeline.batch import ReadFile
from cafe_etl.rules import FileStatus
from cafe_etl.warehouse.base import LedgerEntry

DONE = FileStatus.done()


@dataclass
class Planned:
    read: ReadFile
    file_id: int | None = None  # known already (taken over or processed again), or assigned when claimed
    replaces: int | None = None  # the version loaded at this location, which this one will replace
    clear: bool = False  # this version has rows in the warehouse from an earlier load: clear them first


@dataclass
class Plan:
    process: list[Planned] = field(default_factory=list)
    unchanged: list[tuple[ReadFile, LedgerEntry]] = field(default_factory=list)
    elsewhere: list[tuple[ReadFile, LedgerEntry]] = field(default_factory=list)  # another loader has it
    copies: list[tuple[ReadFile, int | ReadFile]] = field(default_factory=list)  # original id, or in-batch file

    @property
    def taken_over(self) -> list[int]:
        """Known versions this run processes again: their claims become this run's."""
        return [p.file_id for p in self.process if p.file_id is not None]


def _being_loaded(e: LedgerEntry, run_id: int | None) -> bool:
    return e.status == FileStatus.LOADING and (e.run_id == run_id or e.claim_live)


def plan(files: list[ReadFile], known: list[LedgerEntry], run_id: int | None,
         redo: frozenset[int] = frozenset()) -> Plan:
    """``redo``: versions to process again although done (``replay``, after a rule fix)."""
    by_version = {(e.location, e.sha256): e for e in known}
    loaded_at = {e.location: e.file_id for e in known if e.status == FileStatus.LOADED}
    known_content = {}
    for e in known:
        if e.status in (FileStatus.LOADED, FileStatus.REPLACED) or _being_loaded(e, run_id):
            known_content.setdefault(e.sha256, e.file_id)
    out = Plan()
    in_batch: dict[str, ReadFile] = {}
    for f in files:
        location, sha = f.source.location, f.sha256
        entry = by_version.get((location, sha))
        current = loaded_at.get(location)
        if entry is not None and entry.status in DONE and entry.file_id not in redo:
            out.unchanged.append((f, entry))
        elif entry is not None and _being_loaded(entry, run_id):
            out.elsewhere.append((f, entry))
        elif entry is not None:
            # A dead loader's claim, content that came back after being replaced, or a
            # replay: processed again under its own id, its earlier rows cleared first.
            replaces = current if current != entry.file_id else None
            out.process.append(Planned(f, entry.file_id, replaces, clear=entry.status in DONE))
        elif sha in known_content:
            out.copies.append((f, known_content[sha]))
        elif sha in in_batch:
            out.copies.append((f, in_batch[sha]))
        else:
            in_batch[sha] = f
            out.process.append(Planned(f, None, current))
    return out
