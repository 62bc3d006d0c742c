"""What a poll of one SOURCE finds: files that are new or changed since the ledger last
settled them, and ready to be read.

A local file is ready once it has stopped changing: its modification time is at
least ``settle`` seconds old, or its size and modification time are the same on two
looks ``settle`` seconds apart. An object in a store is ready as soon as it is
listed (an upload becomes visible only when complete).

A store is listed from a cursor: when keys are date-prefixed (``2024-03-05/…``,
``2024/03/05/…``, ``dt=20240305/…``), each poll lists only the newest date folder
and what sorts after it. A periodic full listing (``full=True``) finds what a cursor
missed, such as a late upload into an older date folder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cafe_etl.errors import SourceError
from cafe_etl.sources import local, s3
from cafe_etl.sources.base import LandingFile, is_s3

Known = Mapping[str, str]  # location → version tag (ETag) already settled
_DATE_FOLDER = re.compile(r"(19|20)\d\d[-/_]?(0[1-9]|1[0-2])[-/_]?(0[1-9]|[12]\d|3[01])")


@dataclass
class Poll:
    ready: list[LandingFile] = field(default_factory=list)
    settling: int = 0  # files seen still changing: look again soon


class LocalPoller:
    def __init__(self, spec: str, settle: float) -> None:
        self.spec = spec
        self.settle = settle
        self._last_look: dict[str, str] = {}  # unsettled files: their tag at the previous look

    def poll(self, known: Known, now: float, full: bool = False) -> Poll:
        out = Poll()
        looked: dict[str, str] = {}
        for f in self._files():
            if known.get(f.location) == f.etag:
                continue
            if f.modified <= now - self.settle or self._last_look.get(f.location) == f.etag:
                out.ready.append(f)
            else:
                looked[f.location] = f.etag or ""
                out.settling += 1
        self._last_look = looked
        return out

    def _files(self) -> list[LandingFile]:
        try:
            return list(local.discover(self.spec))
        except SourceError:
            if local.is_glob(self.spec):
                return []  # nothing matches yet: normal for a landing zone between uploads
            raise


class S3Poller:
    def __init__(self, spec: str, endpoint_url: str | None) -> None:
        self.spec = spec
        self.bucket, self.prefix = s3.split(spec)
        self.endpoint_url = endpoint_url
        self.cursor: str | None = None  # list from here (StartAfter) unless a full listing is due

    def poll(self, known: Known, now: float, full: bool = False) -> Poll:
        if s3.is_export(self.prefix):  # one object
            found = s3.at(self.spec, self.endpoint_url)
            return Poll([found] if found and known.get(found.location) != found.etag else [])
        out = Poll()
        last_key = None
        for f in s3.listing(self.bucket, self.prefix, self.endpoint_url, None if full else self.cursor):
            last_key = f.location[len("s3://") + len(self.bucket) + 1:]
            if known.get(f.location) != f.etag:
                out.ready.append(f)
        if last_key is not None:
            self.cursor = self._date_folder(last_key)
        return out

    def _date_folder(self, key: str) -> str | None:
        """The newest key's folder, when it names a date: later polls start there."""
        folder = key.rpartition("/")[0]
        return folder if _DATE_FOLDER.search(folder[len(self.prefix):]) else None


def poller(spec: str, settle: float, s3_endpoint_url: str | None) -> LocalPoller | S3Poller:
    return S3Poller(spec, s3_endpoint_url) if is_s3(spec) else LocalPoller(spec, settle)
