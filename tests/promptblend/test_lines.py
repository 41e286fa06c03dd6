"""The line codec: every string round-trips through a one-per-line file; plain text stays plain."""

from __future__ import annotations

import pytest

from promptblend.lines import (
    decode_line,
    dumps,
    encode_line,
    loads,
    read_lines,
    write_lines,
)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# every character str.splitlines() splits on, the backslash, NUL and a lone surrogate
NASTY = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\\", "\x00", "\ud800"]
ANY_TEXT = st.text(alphabet=st.characters(codec=None, categories=None, exclude_categories=()), max_size=40)


@given(st.lists(ANY_TEXT, max_size=8))
@settings(max_examples=400, deadline=None)
def test_any_strings_roundtrip_through_a_file(tmp_path_factory, strings):
    text = dumps(strings)
    assert loads(text) == strings
    assert len(text.splitlines()) == len(strings)  # one physical line per string, whatever reader splits
    path = tmp_path_factory.mktemp("lines") / "x.txt"
    write_lines(path, strings)
    assert read_lines(path) == strings
    assert path.read_text(encoding="utf-8").splitlines() == [encode_line(s) for s in strings]


@given(ANY_TEXT)
@settings(max_examples=400, deadline=None)
def test_decode_inverts_encode(text):
    assert decode_line(encode_line(text)) == text


@given(st.text(alphabet=st.characters(exclude_characters="".join(NASTY), exclude_categories=("Cs",))))
def test_plain_text_is_written_as_is(text):
    assert encode_line(text) == text and decode_line(text) == text


@pytest.mark.parametrize("nasty", NASTY)
def test_each_nasty_character(tmp_path, nasty):
    strings = [f"line one{nasty}line two", nasty, "", f"{nasty}{nasty}", "C:\\new\\x41"]
    write_lines(tmp_path / "f.txt", strings)
    assert read_lines(tmp_path / "f.txt") == strings
    assert "\r" not in (tmp_path / "f.txt").read_bytes().decode("utf-8", "surrogatepass")


def test_old_files_read_the_same(tmp_path):
    (tmp_path / "old.txt").write_bytes("a red car\nunknown \\q escape\r\nlast".encode())
    assert read_lines(tmp_path / "old.txt") == ["a red car", "unknown \\q escape", "last"]
    assert loads("") == [] and loads("\n") == [""] and dumps([]) == ""
