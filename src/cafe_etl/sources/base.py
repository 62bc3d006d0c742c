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
    etag: str | None = None  # the object store's version tag, kept in the ledger

    @property
    def name(self) -> str:
        return self.location.rstrip("/").rsplit("/", 1)[-1]


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def locate(location: str, s3_endpoint_url: str | None = None) -> LandingFile | None:
    """The file at a ledger location, if it is still there."""
    if is_s3(location):
        from cafe_etl.sources import s3

        return s3.at(location, s3_endpoint_url)
    from cafe_etl.sources import local

    return local.at(location)


def discover_one(spec: str, s3_endpoint_url: str | None = None) -> Iterable[LandingFile]:
    """The exports named by one SOURCE: ``s3://bucket/prefix``, ``s3://bucket/key.csv``,
    or a local file, folder or glob."""
    if is_s3(spec):
        from cafe_etl.sources import s3

        return s3.discover(spec, s3_endpoint_url)
    from cafe_etl.sources import local

    return local.discover(spec)


def discover(specs: Iterable[str], s3_endpoint_url: str | None = None) -> list[LandingFile]:
    """Every export named by ``specs``, each once, in a stable order."""
    found: dict[str, LandingFile] = {}
    for spec in specs:
        for item in discover_one(spec, s3_endpoint_url):
            found.setdefault(item.location, item)
    return sorted(found.values(), key=lambda f: f.location)
