"""A file too large for one batch, processed in slices of whole lines, never whole.

Most checks look at one row, but a few need the whole file: its layout (voted by all
of its rows), its branch (the one with the most dated rows), where its data begins
(a header row comes before any dated row), and which rows repeat an earlier one. So
the file is read twice. The survey pass gathers those answers slice by slice into
small ``survey_*`` tables; then each slice is judged like a batch of its own, with
the survey's answers standing in for the ones a batch works out itself, and is
handed on (to be loaded, or listed by ``validate``).

Repeats are byte-for-byte equal rows. The survey keeps 32 bits of each row's
fingerprint (4 bytes a row, so a 2 GB file costs ~80 MB); rows whose 32 bits recur
are the candidates, few in a real export. The judging pass confirms candidates by
the full 128-bit fingerprint and length, carrying the first line of each repeated
row from slice to slice.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from cafe_etl.config import Settings
from cafe_etl.engine import Engine
from cafe_etl.pipeline import clean, extract, transform, validate
from cafe_etl.pipeline.batch import Judged, ReadFile
from cafe_etl.pipeline.validate import FileCounts
from cafe_etl.rules import Layout

SURVEY = "survey_"  # prefix of the tables that live from the first slice to the last
_CANDIDATE_PARTS = 16  # repeated fingerprints are found a sixteenth of the rows at a time

_SURVEY_TABLES = f"""
CREATE OR REPLACE TEMP TABLE {SURVEY}branch (idx INTEGER, f_branch VARCHAR, rows BIGINT, first_line INTEGER,
                                             missing BOOLEAN, branch_id VARCHAR, branch_key BIGINT);
CREATE OR REPLACE TEMP TABLE {SURVEY}hash (h UINTEGER);
CREATE OR REPLACE TEMP TABLE {SURVEY}candidate (h UINTEGER);
CREATE OR REPLACE TEMP TABLE {SURVEY}seen (raw_hash UHUGEINT, raw_bytes BIGINT, first_line INTEGER)
"""

_SURVEY_SLICE = f"""
INSERT INTO {SURVEY}branch SELECT idx, f_branch, rows, first_line, missing, branch_id, branch_key FROM stg_branch;
INSERT INTO {SURVEY}hash SELECT (md5_number(raw) & 4294967295)::UINTEGER FROM stg_line WHERE NOT blank
"""

_SHAPE_OF_SLICE = """
SELECT lines, blank_lines, rows, rows_expected_width, v0_votes, v1_votes, first_row_line, first_data_line
FROM stg_shape
"""

# The branch votes of every slice, summed: clean.file_branches then decides as for a batch.
_FILE_BRANCH_VOTES = f"""
CREATE OR REPLACE TEMP TABLE stg_branch AS
SELECT idx, f_branch, sum(rows) AS rows, min(first_line) AS first_line, any_value(missing) AS missing,
       any_value(branch_id) AS branch_id, any_value(branch_key) AS branch_key
FROM {SURVEY}branch GROUP BY idx, f_branch
"""

_KEEP_FILE_BRANCH = f"""
CREATE OR REPLACE TEMP TABLE {SURVEY}file_branch AS SELECT * FROM stg_file_branch;
CREATE OR REPLACE TEMP TABLE {SURVEY}branch_name AS SELECT * FROM stg_branch_name;
DROP TABLE stg_branch; DROP TABLE stg_file_branch; DROP TABLE stg_branch_name; DROP TABLE {SURVEY}branch
"""

_CANDIDATES = f"""
INSERT INTO {SURVEY}candidate
SELECT h FROM {SURVEY}hash WHERE h % {_CANDIDATE_PARTS} = $part GROUP BY h HAVING count(*) > 1
"""

# The whole file's shape, for the slice's rows.
_FILE_SHAPE = """
CREATE OR REPLACE TEMP TABLE stg_shape AS
SELECT 1::INTEGER AS idx, NULL::BIGINT AS doc_bytes, $lines::BIGINT AS lines, $blank_lines::BIGINT AS blank_lines,
       $rows::BIGINT AS rows, $rows_expected_width::BIGINT AS rows_expected_width, $layout::VARCHAR AS layout,
       $first_row_line::INTEGER AS first_row_line, $first_data_line::INTEGER AS first_data_line,
       NULL::BIGINT AS usual_width  -- the whole file's is the survey's
"""

_USE_FILE_BRANCH = f"""
CREATE OR REPLACE TEMP TABLE stg_file_branch AS SELECT * FROM {SURVEY}file_branch;
CREATE OR REPLACE TEMP TABLE stg_branch_name AS SELECT * FROM {SURVEY}branch_name
"""

# Repeats in a slice: candidate rows, each with the first line it was seen on, in this
# slice or an earlier one (slices are judged in file order); then remember the new ones.
# Across slices a row is known by its MD5 and length (a false match is below 1e-25 for
# a million-line file); within the slice, candidates are few.
_SLICE_DUPLICATES = f"""
CREATE OR REPLACE TEMP TABLE slice_candidate AS
SELECT idx, line_no, raw_hash, strlen(raw) AS raw_bytes
FROM (SELECT idx, line_no, raw, md5_number(raw) AS raw_hash FROM stg_line WHERE NOT blank)
WHERE (raw_hash & 4294967295)::UINTEGER IN (SELECT h FROM {SURVEY}candidate);
CREATE OR REPLACE TEMP TABLE slice_first AS
WITH here AS (
    SELECT raw_hash, raw_bytes, min(line_no) AS first_line FROM slice_candidate GROUP BY raw_hash, raw_bytes
)
SELECT h.raw_hash, h.raw_bytes, coalesce(s.first_line, h.first_line) AS first_line
FROM here h LEFT JOIN {SURVEY}seen s USING (raw_hash, raw_bytes);
CREATE OR REPLACE TEMP TABLE stg_duplicate AS
SELECT c.idx, c.line_no, f.first_line
FROM slice_candidate c JOIN slice_first f USING (raw_hash, raw_bytes)
WHERE f.first_line < c.line_no;
INSERT INTO {SURVEY}seen
SELECT raw_hash, raw_bytes, first_line FROM slice_first f
WHERE NOT EXISTS (SELECT 1 FROM {SURVEY}seen s WHERE s.raw_hash = f.raw_hash AND s.raw_bytes = f.raw_bytes)
"""


# A slice is at most this, or one batch if batches are smaller: the engine's tables
# for a slice stay the same size however large the file and the batch setting.
SLICE_BYTES = 40 << 20


def slice_bytes(settings: Settings) -> int:
    return min(settings.batch_bytes, SLICE_BYTES)


def can_slice(read: ReadFile, settings: Settings) -> bool:
    """A local UTF-8 file with LF or CRLF line ends, at least ``large_file_bytes`` long."""
    d = read.decoded
    return (read.source.local_path is not None and d is not None and d.text is None and not read.error
            and d.line_endings in ("lf", "crlf", "none") and read.size >= settings.large_file_bytes)


_CHANGED = "the file changed while it was being read; it will be read again"


class ChangedWhileRead(Exception):
    """The file's bytes are no longer those fingerprinted when it was listed."""


def slices(path: str, slice_bytes: int, digest=None) -> Iterator[tuple[str, int]]:
    """The file as (text, lines before it) slices of whole lines, about ``slice_bytes`` each."""
    base, carry = 0, b""
    with open(path, "rb") as handle:
        while block := handle.read(slice_bytes):
            if digest is not None:
                digest.update(block)
            data = carry + block if carry else block
            del block
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a slice: read on to its end
                carry = data
                continue
            lines = data.count(b"\n", 0, cut)
            text, carry = _text(memoryview(data)[:cut]), data[cut:]
            del data  # only the text stays while the slice is processed
            yield text, base
            del text
            base += lines
    if carry:
        yield _text(memoryview(carry)), base


def _text(data: memoryview) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError:
        raise ChangedWhileRead from None
    finally:
        data.release()


@dataclass
class Survey:
    """What the judging of every slice needs to know about the whole file."""

    lines: int = 0
    blank_lines: int = 0
    rows: int = 0
    rows_expected_width: int = 0
    v0_votes: int = 0
    v1_votes: int = 0
    first_row_line: int | None = None
    first_data_line: int | None = None
    widths: Counter = field(default_factory=Counter)
    branch_id: str | None = None

    @property
    def layout(self) -> str:
        return Layout.V0 if self.v0_votes > self.v1_votes else Layout.V1

    def add(self, shape: tuple) -> None:
        lines, blank, rows, wide, v0, v1, first_row, first_data = shape
        self.lines += lines
        self.blank_lines += blank
        self.rows += rows
        self.rows_expected_width += wide
        self.v0_votes += v0
        self.v1_votes += v1
        self.first_row_line = _least(self.first_row_line, first_row)
        self.first_data_line = _least(self.first_data_line, first_data)


T = TypeVar("T")


def _least(a: T | None, b: T | None) -> T | None:
    """The smaller of two values either of which may be missing."""
    return b if a is None else a if b is None else min(a, b)


def _greatest(a: T | None, b: T | None) -> T | None:
    return b if a is None else a if b is None else max(a, b)


def survey(engine: Engine, path: str, slice_bytes: int) -> Survey:
    """The survey pass: leaves the ``survey_*`` tables for the judging pass."""
    found = Survey()
    engine.run(_SURVEY_TABLES)
    for text, base in slices(path, slice_bytes):
        extract.extract(engine, [extract.Document(text, None, first_line=base)])
        del text
        found.add(engine.rows(_SHAPE_OF_SLICE)[0])
        found.widths.update(dict(engine.rows("SELECT n_fields, count(*) FROM stg_line WHERE NOT blank GROUP BY 1")))
        clean.row_branches(engine)
        engine.run(_SURVEY_SLICE)
        engine.reset(keep=SURVEY)
    engine.run(_FILE_BRANCH_VOTES)
    clean.file_branches(engine)
    rows = engine.rows("SELECT branch_id FROM stg_file_branch")
    found.branch_id = rows[0][0] if rows else None
    engine.run(_KEEP_FILE_BRANCH)
    for part in range(_CANDIDATE_PARTS):
        engine.run(_CANDIDATES, {"part": part})
    engine.run(f"DROP TABLE {SURVEY}hash")
    return found


def judge(engine: Engine, read: ReadFile, settings: Settings, secret: bytes | None,
          each_slice: Callable[[], None]) -> Judged:
    """Survey the file, then judge it slice by slice, calling ``each_slice`` while the
    slice's ``stg_check`` (and the tables a load stages from) are in the engine. The
    verdict is the one ``batch.judge`` gives a file of a batch (its idx is 1).

    Running out of memory (``duckdb.OutOfMemoryException``) is the caller's to judge:
    the other engine's batch may have taken the memory, so it may be tried again alone."""
    path = read.source.local_path
    now = datetime.now()
    try:
        found = survey(engine, path, slice_bytes(settings))
        shape = {"lines": found.lines, "blank_lines": found.blank_lines, "rows": found.rows,
                 "rows_expected_width": found.rows_expected_width, "layout": str(found.layout),
                 "first_row_line": found.first_row_line, "first_data_line": found.first_data_line}
        totals = _Totals()
        digest = hashlib.sha256()
        for text, base in slices(path, slice_bytes(settings), digest):
            extract.extract(engine, [extract.Document(text, None, first_line=base)])
            del text
            engine.run(_FILE_SHAPE, shape)
            clean.row_branches(engine)
            engine.run(_USE_FILE_BRANCH)
            clean.customers(engine, secret)
            transform.transform(engine, settings.rules.max_item_price)
            totals.add(validate.validate(engine, settings.rules, now, duplicates=_SLICE_DUPLICATES)[1])
            each_slice()
            engine.reset(keep=SURVEY)
    except (ChangedWhileRead, FileNotFoundError):
        return Judged(read, None, None, _CHANGED)
    except OSError as exc:
        return Judged(read, None, None, f"cannot read {path}: {exc.strerror}")
    finally:
        engine.reset()
    if digest.hexdigest() != read.sha256:
        return Judged(read, None, None, _CHANGED)
    counts = totals.counts(found)
    return Judged(read, 1, counts, validate.verdict(counts, read.decoded.lines))


@dataclass
class _Totals:
    loaded: int = 0
    rejected: int = 0
    header_lines: int = 0
    blank_lines: int = 0
    items: int = 0
    reasons: Counter = field(default_factory=Counter)
    first_sale: datetime | None = None
    last_sale: datetime | None = None

    def add(self, c: FileCounts) -> None:
        self.loaded += c.loaded
        self.rejected += c.rejected
        self.header_lines += c.header_lines
        self.blank_lines += c.blank_lines
        self.items += c.items
        self.reasons.update(c.reasons)
        self.first_sale = _least(self.first_sale, c.first_sale)
        self.last_sale = _greatest(self.last_sale, c.last_sale)

    def counts(self, found: Survey) -> FileCounts:
        usual = max(found.widths.items(), key=lambda kv: (kv[1], kv[0]))[0] if found.widths else None
        return FileCounts(1, found.lines, str(found.layout), found.rows, found.rows_expected_width, usual,
                          self.loaded, self.rejected, self.header_lines, self.blank_lines, dict(self.reasons),
                          self.first_sale, self.last_sale, found.branch_id, self.items)
