"""Bytes to text: fingerprint, encoding, line endings and an independent line count.

This is the only stage that sees a file's bytes. It settles the content hash the
ledger versions files by, and counts lines on its own so the accounting check
(lines read = loaded + rejected + ignored) compares two independent counts.
A UTF-8 file on local disk is not decoded here: the engine reads it itself.
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass

_GZIP_MAGIC = b"\x1f\x8b"
READABLE_BY_ENGINE = ("ascii", "utf-8", "utf-8-bom")


class UndecodableFile(Exception):
    """The bytes are not a text export; the message says what they are."""


@dataclass(frozen=True)
class Decoded:
    encoding: str
    line_endings: str  # "lf", "crlf", "cr", "mixed" or "none"
    lines: int
    # The content with line endings normalised to \n and no byte order mark, when
    # the engine cannot read the file itself (not UTF-8, or not on local disk).
    text: str | None = None
    # A large local file the engine reads line by line from disk (LF or CRLF endings,
    # no unit-separator byte), instead of as one value.
    streamable: bool = False


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _breaks(data: bytes | str) -> tuple[int, int, int]:
    """(LF, CR, CRLF) counts; one pass for the usual file without a CR."""
    lf, cr, crlf = (b"\n", b"\r", b"\r\n") if isinstance(data, bytes) else ("\n", "\r", "\r\n")
    if cr not in data:
        return data.count(lf), 0, 0
    both = data.count(crlf)
    return data.count(lf) - both, data.count(cr) - both, both


def _lines_and_endings(data: bytes | str) -> tuple[int, str]:
    """Lines as a reader sees them (CRLF, CR or LF end a line; a last line without one
    still counts) and the kind of line ending, from one count of the breaks."""
    lf, cr, crlf = _breaks(data)
    unterminated = 1 if data and data[-1:] not in (b"\n", b"\r", "\n", "\r") else 0
    kinds = [name for name, n in (("crlf", crlf), ("cr", cr), ("lf", lf)) if n]
    return lf + cr + crlf + unterminated, kinds[0] if len(kinds) == 1 else ("mixed" if kinds else "none")


def count_lines(data: bytes | str) -> int:
    return _lines_and_endings(data)[0]


def _encoding(data: bytes) -> tuple[str, str | None]:
    """The encoding, and the decoded text where decoding was needed to know it."""
    if data.startswith(codecs.BOM_UTF8):
        body = data[len(codecs.BOM_UTF8) :]
        return "utf-8-bom", None if body.isascii() else body.decode("utf-8")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", data.decode("utf-16")
    if data.startswith(_GZIP_MAGIC):
        raise UndecodableFile("the file is gzip-compressed, not a CSV export: decompress it first")
    _check_control_bytes(data)
    if data.isascii():
        return "ascii", None
    try:
        return "utf-8", data.decode("utf-8")
    except UnicodeDecodeError:
        # Older tills and spreadsheets on Windows write cp1252 (e.g. £ as 0xA3).
        return "cp1252", data.decode("cp1252", errors="replace")


# Bytes a text export never holds (tab, LF, CR and the stray NUL handled below aside).
_CONTROL = bytes(b for b in range(32) if b not in (0, 9, 10, 13))
# Binary formats show themselves at once (headers, compressed or packed data): the
# head of a file decides, as for git's and file(1)'s text-or-binary tests.
_SAMPLE = 8 << 10


def _check_control_bytes(data: bytes) -> None:
    """Binary content (an image, a spreadsheet, a database) is refused whole: its
    "rows" would only fill the quarantine with noise. The head of the file decides;
    a stray control byte further on is left to the row checks."""
    sample = data[:_SAMPLE]
    control = len(sample) - len(sample.translate(None, _CONTROL))
    if control and control * 100 > len(sample):
        raise UndecodableFile("the file holds control bytes: it is binary, not a CSV export")


def _check_nul(data: bytes | str) -> bool:
    """True when a few stray NULs must be replaced; raises when the file is binary."""
    nul = b"\x00" if isinstance(data, bytes) else "\x00"
    if nul not in data:
        return False
    count = data.count(nul)
    if count * 100 > len(data):  # binary formats are full of NULs; a text export has a stray one at most
        raise UndecodableFile("the file holds NUL bytes: it is binary, not a CSV export")
    return True


def _normalise(text: str) -> str:
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # A few stray NULs: keep the rows, whose fields then fail validation visibly.
    return text.replace("\x00", "\ufffd")


def decode(data: bytes, *, engine_can_read: bool) -> Decoded:
    """What the file holds; ``engine_can_read``: the engine can open the file by path."""
    try:
        encoding, text = _encoding(data)
    except UnicodeDecodeError as exc:
        raise UndecodableFile(f"the file is not valid {exc.encoding} text") from None
    counted = text if encoding == "utf-16" else data
    stray_nul = _check_nul(counted)
    direct = engine_can_read and encoding in READABLE_BY_ENGINE and not stray_nul
    if not direct and text is None:
        text = data.decode("utf-8-sig" if encoding == "utf-8-bom" else "ascii")
    lines, endings = _lines_and_endings(counted)
    return Decoded(
        encoding=encoding,
        line_endings=endings,
        lines=lines,
        text=None if direct else _normalise(text),
    )


CHUNK = 8 << 20
UNIT_SEPARATOR = b"\x1f"  # the engine's field delimiter when it reads whole lines


def scan_file(path: str) -> tuple[str, int, Decoded] | None:
    """Fingerprint and describe a large local file without holding it in memory:
    (sha256, size, what it holds), the engine to read it by path. None when the file
    needs decoding into text first (not UTF-8, or stray NULs): the caller reads it whole."""
    digest = hashlib.sha256()
    size = lf = cr = crlf = nul = separators = 0
    encoding = "ascii"
    utf8 = codecs.getincrementaldecoder("utf-8")()
    ended_cr = False
    last = b""
    with open(path, "rb") as handle:
        first = True
        while chunk := handle.read(CHUNK):
            if first:
                first = False
                if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    return None
                if chunk.startswith(_GZIP_MAGIC):
                    raise UndecodableFile("the file is gzip-compressed, not a CSV export: decompress it first")
                _check_control_bytes(chunk)
                if chunk.startswith(codecs.BOM_UTF8):
                    encoding = "utf-8-bom"
            digest.update(chunk)
            size += len(chunk)
            if not chunk.isascii():
                try:
                    utf8.decode(chunk)
                except UnicodeDecodeError:
                    return None  # cp1252 or another single-byte code page: decoded whole
                if encoding == "ascii":
                    encoding = "utf-8"
            nul += chunk.count(b"\x00")
            separators += chunk.count(UNIT_SEPARATOR)
            lf += chunk.count(b"\n")
            cr += chunk.count(b"\r")
            crlf += chunk.count(b"\r\n") + (1 if ended_cr and chunk.startswith(b"\n") else 0)
            ended_cr = chunk.endswith(b"\r")
            last = chunk[-1:]
    try:
        utf8.decode(b"", final=True)
    except UnicodeDecodeError:
        return None  # cut off inside a character
    if nul:
        if nul * 100 > size:
            raise UndecodableFile("the file holds NUL bytes: it is binary, not a CSV export")
        return None
    counts = (lf - crlf, cr - crlf, crlf)
    kinds = [name for name, n in (("crlf", counts[2]), ("cr", counts[1]), ("lf", counts[0])) if n]
    endings = kinds[0] if len(kinds) == 1 else ("mixed" if kinds else "none")
    lines = sum(counts) + (1 if size and last not in (b"\n", b"\r") else 0)
    streamable = endings in ("lf", "crlf", "none") and not separators
    return digest.hexdigest(), size, Decoded(encoding=encoding, line_endings=endings, lines=lines, text=None,
                                             streamable=streamable)
