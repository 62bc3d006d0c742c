"""What every source provides: a discovered file and a way to read its bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class LandingFile:
    location: str  # the file's identity in the ledger
    size: int
    modified: float  # seconds since the epoch
    read: Callable[[], bytes]
    local_path: str | None = None  # set when the engine can open the file itself

    @property
    def name(self) -> str:
        return self.location.rstrip("/").rsplit("/", 1)[-1]


def locate(location: str) -> LandingFile | None:
    """The file at a ledger location, if it is still there."""
    from cafe_etl.sources import local

    return local.at(location)


def discover(specs: Iterable[str]) -> list[LandingFile]:
    """Every export named by ``specs`` (files, folders, globs), each once, in a stable order."""
    from cafe_etl.sources import local

    found: dict[str, LandingFile] = {}
    for spec in specs:
        for item in local.discover(spec):
            found.setdefault(item.location, item)
    return sorted(found.values(), key=lambda f: f.location)
