"""Extract: text to fielded rows, and each file's layout, detected from its rows.

Lines are cut with plain string functions: a line holds either no quote, or one
quoted field (the basket) between the third and the third-last comma. Anything
else (the legacy card field ``"visa,4111..."``, stray quotes) goes through a full
CSV field parser. The basket is kept as text; the transform stage reads its items.
"""

from __future__ import annotations

from dataclasses import dataclass

from cafe_etl.engine import Engine
from cafe_etl.rules import EXPECTED_FIELDS, Layout

_DOCS_FROM_DISK = """
SELECT ($disk_idx::INTEGER[])[file_index::BIGINT + 1] AS idx, size AS bytes, 0 AS base, content
FROM read_text($paths)
"""
_DOCS_FROM_MEMORY = """
SELECT unnest($text_idx::INTEGER[]) AS idx, NULL::BIGINT AS bytes, unnest($text_base::INTEGER[]) AS base,
       unnest($texts::VARCHAR[]) AS content
"""
# A large file is read line by line, never as one value: the engine's CSV reader with
# a delimiter the file does not hold and no quoting gives each line whole, in order.
# A blank line reads as NULL. One reader thread keeps the lines in file order for
# their numbers. No "remainder after the last newline" (n = 0) to drop.
_LINES_STREAMED = """
SELECT {idx}::INTEGER AS idx, NULL::BIGINT AS bytes, 0 AS base, row_number() OVER ()::INTEGER AS sub,
       coalesce(raw, '') AS raw, 0 AS n
FROM read_csv({path}, columns = {{'raw': 'VARCHAR'}}, header = false, auto_detect = false, delim = chr(31),
              quote = '', escape = '', new_line = {new_line}, max_line_size = 16777216, parallel = false)
"""

# stg_line: one row per line of every file, with its fields as written (padding is
# trimmed where a value is parsed). Lines are cut with plain string functions; the
# CASEs stand where OR/AND would do, because DuckDB evaluates both sides of OR and
# AND on every row and CASE only where needed.
#
# Personal data is reduced here to ``identity``: the customer's name lower-cased with
# whitespace collapsed, a NUL, and the card's digits for a card payment. It lives only
# in memory until the customer key (its keyed hash) is made from it. Later stages find
# a row's repeats by its text, and its basket and customer by their texts, or by their
# 64-bit hashes where the batch's hashes are checked unique (validate._HASHES_UNIQUE):
# exactly either way, never by a fingerprint that could collide unchecked.
_LINES = f"""
CREATE OR REPLACE TEMP TABLE stg_line AS
WITH doc AS (
    SELECT idx, bytes, base,
           CASE WHEN contains(content, chr(13))
                THEN replace(replace(content, chr(13) || chr(10), chr(10)), chr(13), chr(10))
                ELSE content END AS content
    FROM ({{documents}})
), line AS (
    SELECT idx, bytes, base, generate_subscripts(lines, 1)::INTEGER AS sub, unnest(lines) AS raw, len(lines) AS n
    FROM (SELECT idx, bytes, base, string_split(content, chr(10)) AS lines FROM doc)
    {{streamed}}
), cut AS (
    -- The last "line" of a file that ends with a newline is the empty remainder after it;
    -- a byte order mark before the first line is not part of it. A document that is a
    -- slice of a file starts after ``base`` lines of it.
    SELECT idx, bytes, (sub + base)::INTEGER AS line_no, raw, string_split(raw, ',') AS cells,
           CASE WHEN instr(raw, '"') <> 0 THEN string_split(raw, '"') END AS pieces  -- around the quotes
    FROM (SELECT idx, bytes, base, sub, n,
                 CASE WHEN sub + base = 1 AND starts_with(raw, chr(65279)) THEN substr(raw, 2) ELSE raw END AS raw
          FROM line)
    WHERE NOT (sub = n AND raw = '')
), quoted AS (
    SELECT *, coalesce(len(pieces) - 1, 0) AS quotes FROM cut
), cellwise AS (
    -- Everything taken from the cells is taken here, so the list goes no further.
    -- A row whose quotes do not balance (an odd count: a doubled quote inside a quoted
    -- field counts two) cannot be cut into fields with any confidence.
    SELECT idx, bytes, line_no, raw, quotes % 2 = 1 AS unbalanced,
           CASE WHEN quotes = 0 THEN true
                WHEN quotes = 2 AND len(cells) >= {EXPECTED_FIELDS}
                    THEN CASE WHEN starts_with(cells[4], '"') THEN true ELSE starts_with(ltrim(cells[4]), '"') END
                         AND CASE WHEN ends_with(cells[-4], '"') THEN true ELSE ends_with(rtrim(cells[-4]), '"') END
                ELSE false END AS simple,
           CASE WHEN quotes = 0 THEN len(cells) ELSE {EXPECTED_FIELDS} END AS cell_fields,
           cells[1] AS k1, cells[2] AS k2, cells[3] AS k3, cells[-3] AS k5, cells[-2] AS k6, cells[-1] AS k7,
           -- the basket: the fourth cell, or what the quotes hold in a simple quoted line
           CASE WHEN quotes = 0 THEN cells[4] ELSE pieces[2] END AS k4
    FROM quoted
), fielded AS (
    SELECT *, CASE WHEN NOT simple THEN csv_fields(raw) END AS fields FROM cellwise
), named AS (
    SELECT idx, bytes, line_no, raw, unbalanced,
           CASE WHEN simple THEN k1 ELSE fields[1] END AS c1,
           CASE WHEN simple THEN k2 ELSE fields[2] END AS c2,
           CASE WHEN simple THEN k3 ELSE fields[3] END AS c3,
           CASE WHEN simple THEN k5 ELSE fields[5] END AS c5,
           CASE WHEN simple THEN k6 ELSE fields[6] END AS c6,
           CASE WHEN simple THEN k7 ELSE fields[7] END AS c7,
           CASE WHEN simple THEN cell_fields ELSE len(fields) END AS n_fields,
           CASE WHEN simple THEN k4 ELSE fields[4] END AS c4
    FROM fielded
), based AS (
    SELECT *,
           CASE WHEN n_fields = {EXPECTED_FIELDS} AND NOT unbalanced THEN c4 END AS basket,
           -- the payment, wherever the layout puts it (a total is never CASH or CARD)
           CASE WHEN c6 = 'CARD' THEN true WHEN c6 = 'CASH' THEN false
                ELSE coalesce(payment_word(c6), '') = 'CARD' OR coalesce(payment_word(c5), '') = 'CARD' END AS by_card
    FROM named
), dated AS (
    SELECT *, parse_when(c1) AS sold_at FROM based
)
SELECT idx, line_no, bytes AS doc_bytes,
       raw,
       CASE WHEN raw = '' THEN true
            WHEN starts_with(raw, ' ') OR starts_with(raw, chr(9)) THEN trim(raw, ' ' || chr(9)) = ''
            ELSE false END AS blank,
       n_fields,
       unbalanced,
       -- Could be a header (DESIGN §3): the export's field count, printable text, and
       -- in every field a word that holds no digit and is not a placeholder. Whether
       -- it comes before the file's first dated row is known later (validate).
       CASE WHEN sold_at IS NOT NULL THEN false
            WHEN n_fields <> {EXPECTED_FIELDS} THEN false
            WHEN unbalanced THEN false
            WHEN regexp_matches(raw, '[0-9]') THEN false
            WHEN unprintable(raw) THEN false
            ELSE list_bool_and(list_transform([c1, c2, c3, c4, c5, c6, c7],
                                              lambda f: regexp_matches(f, '\\pL') AND NOT is_missing(f)))
       END AS headerlike,
       c1 AS f_when,
       c2 AS f_branch,
       basket,
       c5 AS f5,
       c6 AS f6,
       CASE WHEN NOT is_missing(c3)
            THEN lower(collapse(c3)) || chr(0) ||
                 CASE WHEN NOT by_card THEN '' WHEN is_missing(c7) THEN ''
                      WHEN regexp_full_match(c7, '[0-9]+') THEN c7
                      ELSE regexp_replace(c7, '[^0-9]', '', 'g') END
       END AS identity,
       sold_at
FROM dated
"""

# stg_shape: per file, the layout voted by its rows and where its data begins.
# The payment field (CASH/CARD) sits sixth in V1 and fifth in the legacy V0 export:
# whichever position most rows agree on decides, whatever a header row claims.
_SHAPE = f"""
CREATE OR REPLACE TEMP TABLE stg_shape AS
SELECT
    idx,
    any_value(doc_bytes) AS doc_bytes,
    count(*) AS lines,
    count(*) FILTER (WHERE blank) AS blank_lines,
    count(*) FILTER (WHERE NOT blank) AS rows,
    count(*) FILTER (WHERE NOT blank AND n_fields = {EXPECTED_FIELDS} AND NOT unbalanced) AS rows_expected_width,
    count(*) FILTER (WHERE n_fields = {EXPECTED_FIELDS} AND NOT unbalanced
                     AND payment_word(f5) IN ('CASH', 'CARD')) AS v0_votes,
    count(*) FILTER (WHERE n_fields = {EXPECTED_FIELDS} AND NOT unbalanced
                     AND payment_word(f6) IN ('CASH', 'CARD')) AS v1_votes,
    CASE WHEN v0_votes > v1_votes THEN '{Layout.V0}' ELSE '{Layout.V1}' END AS layout,
    min(line_no) FILTER (WHERE NOT blank) AS first_row_line,
    min(line_no) FILTER (WHERE sold_at IS NOT NULL) AS first_data_line,
    mode(n_fields) FILTER (WHERE NOT blank) AS usual_width  -- for the reason a file is not an export
FROM stg_line
GROUP BY idx
"""


@dataclass(frozen=True)
class Document:
    """One file for the engine: its text, or the local path the engine reads it from
    (whole, or line by line when ``line_ending`` is given)."""

    text: str | None
    path: str | None
    line_ending: str | None = None  # "\n" or "\r\n": stream the file's lines
    first_line: int = 0  # lines of the file before ``text``, when it is a slice of one


def _documents(docs: list[Document]) -> tuple[str, str, dict]:
    """The batch's documents as a subquery (read from disk by the engine, or given as
    text), and the lines of the streamed ones as UNION ALL branches of the line CTE."""
    on_disk = [(i, d.path) for i, d in enumerate(docs, start=1) if d.text is None and d.line_ending is None]
    in_memory = [(i, d.text, d.first_line) for i, d in enumerate(docs, start=1) if d.text is not None]
    streamed = [(i, d) for i, d in enumerate(docs, start=1) if d.text is None and d.line_ending is not None]
    parts, params = [], {}
    if on_disk:
        parts.append(_DOCS_FROM_DISK)
        params |= {"disk_idx": [i for i, _ in on_disk], "paths": [p for _, p in on_disk]}
    if in_memory or not parts:
        parts.append(_DOCS_FROM_MEMORY)
        params |= {"text_idx": [i for i, _, _ in in_memory], "texts": [t for _, t, _ in in_memory],
                   "text_base": [b for _, _, b in in_memory]}
    lines = []
    for i, d in streamed:
        params |= {f"stream_path_{i}": d.path, f"stream_nl_{i}": "\\r\\n" if d.line_ending == "\r\n" else "\\n"}
        lines.append("UNION ALL " + _LINES_STREAMED.format(idx=i, path=f"$stream_path_{i}",
                                                          new_line=f"$stream_nl_{i}"))
    return " UNION ALL ".join(parts), "\n".join(lines), params


def extract(engine: Engine, docs: list[Document]) -> dict[int, int]:
    """Stage the lines of ``docs`` (file idx = position + 1) and detect each file's shape.

    Returns the size of each document the engine read from disk, so the caller can
    check it is still the version it fingerprinted.
    """
    documents, streamed, params = _documents(docs)
    engine.run(_LINES.replace("{documents}", documents).replace("{streamed}", streamed), params)
    engine.run(_SHAPE)
    return dict(engine.rows("SELECT idx, doc_bytes FROM stg_shape WHERE doc_bytes IS NOT NULL"))
