"""The secret behind customer keys.

A customer key is HMAC-SHA256(secret, normalised name + card). The secret is made
on first use and kept in a file readable by its owner only (0600), outside the
warehouse, so the warehouse alone cannot be used to test guesses of who a
customer is. Where no file can be kept (a cloud function), the same secret comes
from the environment (``CAFE_ETL_CUSTOMER_KEY``, filled from a secret store), so
every invocation derives the same customer keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from cafe_etl.errors import ConfigError
from cafe_etl.rules import PLACEHOLDERS

if TYPE_CHECKING:
    from cafe_etl.config import Settings

KEY_BYTES = 32
KEY_HEX_DIGITS = 15  # 60 bits: a key fits a signed BIGINT


def customer_key(secret: bytes, name: str, card: str = "") -> int | None:
    """The key cafe-etl gives the customer ``name`` paying with ``card`` (its digits;
    empty for cash), for a CRM that holds the same secret to match target lists.

    The identity is the name lower-cased with its whitespace collapsed, a NUL, and the
    card's digits; the key is the first 60 bits of its HMAC-SHA256 under the secret.
    A sale without a name (a placeholder such as ``N/A``) has no customer: None. The
    same person paying cash and by card has two keys, as a till sees two customers.
    """
    if name is None or name.strip(" ").upper() in PLACEHOLDERS:
        return None
    identity = _collapse(name).lower() + "\0" + re.sub(r"[^0-9]", "", card or "")
    digest = hmac.new(secret, identity.encode("utf-8"), hashlib.sha256).hexdigest()
    return int(digest[:KEY_HEX_DIGITS], 16)


def _collapse(text: str) -> str:
    """Whitespace runs as one space, the ends trimmed of spaces: the engine's ``collapse``."""
    if "  " in text or "\t" in text:
        return re.sub(r"[\t\n\f\r ]+", " ", text.strip(" "))
    return text.strip(" ")


def from_text(text: str, source: str) -> bytes:
    """A key given as hex (an environment variable filled from a secret store)."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ConfigError(f"{source} does not hold a hex key") from None
    if len(key) < 16:
        raise ConfigError(f"the customer key in {source} is too short (at least 16 bytes)")
    return key


def load_or_create_key(path: Path) -> bytes:
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    private_folders(path.parent)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        # O_EXCL: two processes starting at once cannot both write a key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    except OSError as exc:
        raise ConfigError(f"cannot create the customer key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(key.hex().encode() + b"\n")
    return key


def private_folders(folder: Path) -> None:
    """Make ``folder`` and every missing folder above it private (0700): ``mkdir
    parents=True`` gives only the last one the mode asked for."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for made in reversed(missing):
        try:
            made.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another process made it first
        except OSError as exc:
            raise ConfigError(f"cannot create the folder {made}: {exc.strerror}") from None


def _read(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot read the customer key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the customer key file {path} is readable by others; run: chmod 600 {path}")
    return from_text(text, f"the customer key file {path}")


def secret_for(settings: Settings, *, make: bool = True) -> bytes | None:
    """The customer-key secret a run uses: none when customer keys are off; the one
    given in the environment; or the key file's, made on first use. ``make=False``: for
    a worker that must derive the same keys as the run that sent it work (a Spark
    task), a missing key file is an error, never a new key."""
    if not settings.customer_keys:
        return None
    if settings.customer_key:
        return from_text(settings.customer_key, "CAFE_ETL_CUSTOMER_KEY")
    if make:
        return load_or_create_key(settings.key_file)
    try:
        return _read(settings.key_file)
    except FileNotFoundError:
        raise ConfigError(f"no customer key: {settings.key_file} does not exist and CAFE_ETL_CUSTOMER_KEY "
                          "is not set") from None


def check_of(secret: bytes | None) -> str | None:
    """A fingerprint of ``secret`` that tells whether two processes hold the same one
    without revealing it (an HMAC of a fixed label)."""
    if secret is None:
        return None
    return hmac.new(secret, b"cafe-etl key check", hashlib.sha256).hexdigest()[:16]
