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
    with pytest.raises(UndecodableFile, match="NUL bytes"):
        decode(b"\x00\x01\x02" * 100, engine_can_read=True)


def test_a_stray_nul_keeps_the_file():
    d = decode(f"{ROW}\n{ROW}\x00\n".encode() + f"{ROW}\n".encode() * 200, engine_can_read=True)
    assert d.text is not None and "\x00" not in d.text and d.lines == 202
