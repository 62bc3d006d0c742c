"""Landing-zone sources: where branch exports are discovered and read from.

A source turns a user's SOURCE argument into ``LandingFile`` objects. Each file is
identified by its location (absolute path, or ``s3://bucket/key``) and read
as bytes; everything after that is source-independent.
"""

from __future__ import annotations

from cafe_etl.sources.base import LandingFile, discover, locate

__all__ = ["LandingFile", "discover", "locate"]
