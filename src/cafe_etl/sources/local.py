"""The local landing folder: files, folders (searched recursively) and globs."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

from cafe_etl.errors import SourceError
from cafe_etl.sources.base import LandingFile

EXPORT_SUFFIX = ".csv"
_GLOB_CHARS = set("*?[")


def _is_export(name: str) -> bool:
    return name.lower().endswith(EXPORT_SUFFIX) and not name.startswith(".")


def _reader(path: str):
    def read() -> bytes:
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise SourceError(f"{path} disappeared before it could be read") from None
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror}") from None

    return read


def at(path: str) -> LandingFile | None:
    return _landing_file(path) if os.path.isfile(path) else None


def _landing_file(path: str) -> LandingFile | None:
    try:
        info = os.stat(path)
    except OSError:
        return None  # vanished between listing and stat: the next run sees it, or not
    location = os.path.abspath(path)
    return LandingFile(location=location, size=info.st_size, modified=info.st_mtime, read=_reader(location),
                       local_path=location, etag=version_tag(info))


def version_tag(info: os.stat_result) -> str:
    """A cheap version tag for a local file, as web servers derive ETags: modification
    time and size. It changes whenever the file is written, so ``watch`` can tell what is
    new without reading what it has already seen."""
    return f"{info.st_mtime_ns:x}-{info.st_size:x}"


def _walk(folder: str) -> Iterator[str]:
    # followlinks=False: a symlink loop in the landing folder cannot trap the walk.
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if _is_export(name):
                yield os.path.join(root, name)


def is_glob(spec: str) -> bool:
    return any(ch in spec for ch in _GLOB_CHARS) and not os.path.exists(spec)


def discover(spec: str) -> Iterator[LandingFile]:
    if is_glob(spec):
        matches = sorted(glob.glob(spec, recursive=True))
        if not matches:
            raise SourceError(f"no file matches {spec!r}")
        paths: list[str] = []
        for match in matches:
            paths.extend(_walk(match) if os.path.isdir(match) else [match])
    elif os.path.isdir(spec):
        paths = list(_walk(spec))
    elif os.path.exists(spec):
        paths = [spec]
    else:
        raise SourceError(f"no such file or folder: {spec}")
    for path in paths:
        item = _landing_file(path)
        if item is not None and Path(path).is_file():
            yield item
