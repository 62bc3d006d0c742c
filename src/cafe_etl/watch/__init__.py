"""Continuous ingestion: poll the landing zone and load what lands (``cafe-etl watch``)."""

from cafe_etl.watch.service import Watcher, WatchOptions

__all__ = ["WatchOptions", "Watcher"]
