"""cafe-etl: nightly café branch exports into a PII-free star-schema warehouse."""

__version__ = "0.1.0"
