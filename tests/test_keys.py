"""The customer-key secret: made once, owner-only, never weakened silently."""

from __future__ import annotations

import os
import stat

import pytest

from cafe_etl.errors import ConfigError
from cafe_etl.keys import load_or_create_key


def test_created_once_with_owner_only_permissions(tmp_path):
    path = tmp_path / "nested" / "customer-key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key


def test_a_readable_key_file_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "customer-key"
    load_or_create_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_key(path)


def test_a_broken_key_file_is_refused(tmp_path):
    path = tmp_path / "customer-key"
    path.write_text("not hex\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="does not hold a hex key"):
        load_or_create_key(path)


def test_a_crm_derives_the_same_customer_key_as_the_pipeline(tmp_path):
    """README: a CRM holding the secret computes a customer's key from a name and card."""
    from tests.conftest import query, run_cli

    from cafe_etl.keys import customer_key

    secret_hex = "00112233445566778899aabbccddeeff" * 2
    rows = [  # name, payment, card: spellings a till writes for the same people, and a cash customer
        ("Ann  Smith", "CARD", "4111111111111111"),
        (" ann smith", "CARD", "4111 1111 1111 1111"),
        ("Bob\tJones", "CASH", ""),
        ("BOB JONES ", "CASH", ""),
        ("Zoë Ölmez", "CARD", "5500-0000-0000-0004"),
        ("N/A", "CASH", ""),
    ]
    lines = [f"04/03/2024 08:{n:02d},Leeds,{name},Large Latte - 2.45,2.45,{payment},{card}"
             for n, (name, payment, card) in enumerate(rows)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "leeds_04-03-2024.csv").write_text("\n".join(lines) + "\n")
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    result = run_cli("ingest", tmp_path / "in", "--warehouse", url, env={"CAFE_ETL_CUSTOMER_KEY": secret_hex})
    assert result.code == 0, result.stderr
    loaded = dict(query(url, "SELECT source_row, customer_key FROM fact_sale"))
    secret = bytes.fromhex(secret_hex)
    expected = {row: customer_key(secret, name, card if payment == "CARD" else "")
                for row, (name, payment, card) in enumerate(rows, start=1)}
    assert loaded == expected
    assert expected[1] == expected[2] and expected[3] == expected[4] and expected[6] is None
    assert len({expected[1], expected[3], expected[5]}) == 3
