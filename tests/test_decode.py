"""Bytes to text: encodings, line endings, the independent line count."""

from __future__ import annotations

import codecs
import gzip

import pytest

from cafe_etl.pipeline.decode import UndecodableFile, count_lines, decode

ROW = "25/08/2021 09:00,Leeds,Ann,Regular Latte - 2.15,2.15,CASH,"


@pytest.mark.parametrize(
    ("text", "lines"),
    [("", 0), ("a", 1), ("a\n", 1), ("a\nb", 2), ("a\r\nb\r\n", 2), ("a\rb\r", 2), ("a\n\n", 2), ("a\r\n\rb", 3),
     ("a\n ", 2)],
)
def test_count_lines(text, lines):
    assert count_lines(text) == lines
    assert count_lines(text.encode()) == lines


def test_ascii_on_disk_is_left_to_the_engine():
    d = decode(f"{ROW}\n".encode(), engine_can_read=True)
    assert (d.encoding, d.line_endings, d.lines, d.text) == ("ascii", "lf", 1, None)


def test_text_is_given_when_the_engine_cannot_read_the_file():
    d = decode(f"{ROW}\r\n{ROW}\r\n".encode(), engine_can_read=False)
    assert d.text == f"{ROW}\n{ROW}\n" and d.line_endings == "crlf" and d.lines == 2


def test_bom_is_removed():
    d = decode(codecs.BOM_UTF8 + f"{ROW}\n".encode(), engine_can_read=False)
    assert d.encoding == "utf-8-bom" and d.text == f"{ROW}\n"


def test_cp1252_pound_sign():
    d = decode("25/08/2021 09:00,Leeds,Zoë £,Regular Latte - 2.15,2.15,CASH,\n".encode("cp1252"), engine_can_read=True)
    assert d.encoding == "cp1252" and "Zoë £" in d.text


def test_utf16():
    d = decode(f"{ROW}\n".encode("utf-16"), engine_can_read=True)
    assert d.encoding == "utf-16" and d.text == f"{ROW}\n" and d.lines == 1


def test_cr_only_line_endings():
    d = decode(f"{ROW}\r{ROW}\r".encode(), engine_can_read=False)
    assert d.line_endings == "cr" and d.lines == 2 and d.text == f"{ROW}\n{ROW}\n"


def test_gzip_is_refused_with_a_reason():
    with pytest.raises(UndecodableFile, match="gzip-compressed"):
        decode(gzip.compress(ROW.encode()), engine_can_read=True)


def test_binary_is_refused_with_a_reason():
    with pytest.raises(UndecodableFile, match="binary, not a CSV export"):
        decode(b"\x00\x01\x02" * 100, engine_can_read=True)


def test_a_stray_nul_keeps_the_file():
    d = decode(f"{ROW}\n{ROW}\x00\n".encode() + f"{ROW}\n".encode() * 200, engine_can_read=True)
    assert d.text is not None and "\x00" not in d.text and d.lines == 202


def test_scanning_a_large_file_in_chunks_agrees_with_decoding_it_whole(tmp_path, monkeypatch):
    import random

    from cafe_etl.pipeline import decode as decoding

    monkeypatch.setattr(decoding, "CHUNK", 7)  # tiny chunks: a CR, a CRLF or a character cut at every boundary
    rng = random.Random(3)
    pieces = [b"a", b"\r", b"\n", b"\r\n", b",", "é".encode(), "£".encode(), b"x" * 9, b"\xa3", b"b"]
    checked = 0
    for n in range(1500):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        data = (b"\xef\xbb\xbf" if n % 10 == 0 else b"") + body
        path = tmp_path / f"{n}.csv"
        path.write_bytes(data)
        scanned = decoding.scan_file(str(path))
        try:
            whole = decoding.decode(data, engine_can_read=True)
        except UndecodableFile:
            assert scanned is None  # read whole, it is refused the same way
            continue
        if scanned is None:
            assert whole.text is not None  # it needs decoding into text: read whole instead
            continue
        sha, size, found = scanned
        assert (sha, size) == (decoding.fingerprint(data), len(data))
        assert (found.encoding, found.line_endings, found.lines) == (whole.encoding, whole.line_endings, whole.lines)
        checked += 1
    assert checked > 300
