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
