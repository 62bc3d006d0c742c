"""The ``cafe-etl`` command line (DESIGN §8): parse options, call the library, print.

One module per group of commands; ``common`` holds what they share (the group, its
one-line errors, options, dates).
"""

from cafe_etl.cli import insights, loading, reading, serving  # noqa: F401 - importing them registers the commands
from cafe_etl.cli.common import main

__all__ = ["main"]
