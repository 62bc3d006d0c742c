"""Clean: branch identity, each file's branch, and the customer key.

The line pass has already reduced a customer's name and card to their ``identity``
(name lower-cased with whitespace collapsed + NUL + card digits, or nothing for
cash). Here it becomes the customer key, HMAC-SHA256(secret, identity) cut to 60
bits so it fits a BIGINT, computed once per distinct customer of the batch; after
that the identity is dropped with the lines.
"""

from __future__ import annotations

import hashlib

from cafe_etl.engine import Engine
from cafe_etl.rules import MAX_NAME_CHARS

_BLOCK = 64  # SHA-256 block size, for HMAC's inner and outer pads

# stg_branch: every spelling of a branch in each file, with its identity.
# Identity ignores case and extra spaces; the display name is the first spelling
# that is not all lower-case (DESIGN §3). A spelling with control characters or
# longer than any name is no branch at all: counted as missing.
_BRANCHES = f"""
CREATE OR REPLACE TEMP TABLE stg_branch AS
SELECT idx, f_branch, rows, first_line, missing,
       CASE WHEN NOT missing THEN lower(collapse(f_branch)) END AS branch_id,
       CASE WHEN NOT missing THEN key_of(lower(collapse(f_branch))) END AS branch_key
FROM (SELECT idx, f_branch, count(*) FILTER (WHERE sold_at IS NOT NULL) AS rows, min(line_no) AS first_line,
             CASE WHEN is_missing(f_branch) THEN true
                  WHEN length(f_branch) > {MAX_NAME_CHARS} THEN true
                  ELSE unprintable(f_branch) END AS missing
      FROM stg_line
      WHERE NOT blank
      GROUP BY idx, f_branch)
"""

# stg_file_branch: the one branch each file holds: the most dated rows (a header
# row has no date), the earliest on a tie.
_FILE_BRANCH = """
CREATE OR REPLACE TEMP TABLE stg_file_branch AS
SELECT idx, arg_max(branch_id, score) AS branch_id, arg_max(branch_key, score) AS branch_key
FROM (
    SELECT idx, branch_id, any_value(branch_key) AS branch_key,
           sum(rows) * 1000000000 - min(first_line) AS score
    FROM stg_branch WHERE NOT missing
    GROUP BY idx, branch_id
)
GROUP BY idx
"""

_DISPLAY_NAMES = """
CREATE OR REPLACE TEMP TABLE stg_branch_name AS
SELECT branch_id, any_value(branch_key) AS branch_key,
       coalesce(arg_min(collapse(f_branch), (idx, first_line))
                    FILTER (WHERE collapse(f_branch) <> lower(collapse(f_branch))),
                arg_min(collapse(f_branch), (idx, first_line))) AS name
FROM stg_branch WHERE NOT missing
GROUP BY branch_id
"""

# stg_customer: one key per distinct customer of the batch (regulars come back every
# day), found again by the identity itself.
_CUSTOMERS = """
CREATE OR REPLACE TEMP TABLE stg_customer AS
SELECT identity, hash(identity) AS identity_hash,
       ('0x' || left(sha256($outer_pad || unhex(sha256($inner_pad || encode(identity)))), 15))::BIGINT
           AS customer_key
FROM (SELECT DISTINCT identity FROM stg_line WHERE identity IS NOT NULL)
"""

_NO_CUSTOMERS = """
CREATE OR REPLACE TEMP TABLE stg_customer AS
SELECT NULL::VARCHAR AS identity, NULL::UBIGINT AS identity_hash, NULL::BIGINT AS customer_key
WHERE false
"""


def hmac_pads(secret: bytes) -> tuple[bytes, bytes]:
    """HMAC's (inner, outer) padded keys, so SQL can compute HMAC-SHA256 with two sha256 calls."""
    key = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def clean(engine: Engine, secret: bytes | None) -> None:
    engine.run(_BRANCHES)
    file_branches(engine)
    customers(engine, secret)


def file_branches(engine: Engine) -> None:
    """Each file's branch and each branch's display name, from ``stg_branch``."""
    engine.run(_FILE_BRANCH)
    engine.run(_DISPLAY_NAMES)


def row_branches(engine: Engine) -> None:
    engine.run(_BRANCHES)


def customers(engine: Engine, secret: bytes | None) -> None:
    if secret is None:
        engine.run(_NO_CUSTOMERS)
    else:
        inner, outer = hmac_pads(secret)
        engine.run(_CUSTOMERS, {"inner_pad": inner, "outer_pad": outer})
