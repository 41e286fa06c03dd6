"""Text files of one string per line that round-trip every ``str`` (ids.txt, prompts.txt).

Each string is written on one line with a backslash escape for the backslash itself and for every
character that ``str.splitlines`` (or a universal-newline reader) would split on, plus NUL and lone
surrogates (which UTF-8 cannot hold). Plain text without backslashes or line breaks is written as
is, so old files read the same; a backslash not followed by a known escape is kept verbatim, and a
raw ``\\r`` before the ``\\n`` (a CRLF file written elsewhere) is dropped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_ESCAPE = re.compile("[\\\\\n\r\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\ud800-\udfff]")
_UNESCAPE = re.compile(r"\\(\\|n|r|x[0-9a-f]{2}|u[0-9a-f]{4})")
_DECODED = {"\\": "\\", "n": "\n", "r": "\r"}


def _escape(match: re.Match) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def _unescape(match: re.Match) -> str:
    code = match.group(1)
    return _DECODED.get(code) or chr(int(code[1:], 16))


def encode_line(text: str) -> str:
    """``text`` as one line: no line-break characters, no lone surrogates; plain text unchanged."""
    return _ESCAPE.sub(_escape, text)


def decode_line(line: str) -> str:
    """The string :func:`encode_line` encoded (unknown escapes are kept as written)."""
    return _UNESCAPE.sub(_unescape, line) if "\\" in line else line


def dumps(strings: Iterable[str]) -> str:
    """The file text for ``strings``: each encoded line followed by ``\\n``."""
    return "".join(encode_line(s) + "\n" for s in strings)


def loads(text: str) -> list[str]:
    """The strings of a file's text (split on ``\\n`` only; a CRLF ending is accepted)."""
    if not text:
        return []
    rows = (text[:-1] if text.endswith("\n") else text).split("\n")
    return [decode_line(r[:-1] if r.endswith("\r") else r) for r in rows]


def write_lines(path: str | os.PathLike, strings: Iterable[str]) -> None:
    """Write ``strings`` one per line to ``path`` atomically (UTF-8, ``\\n`` endings)."""
    from .atomic import write_text

    write_text(path, dumps(strings))


def read_lines(path: str | os.PathLike) -> list[str]:
    """Read a file written by :func:`write_lines` (or any plain UTF-8 line file)."""
    with open(Path(path), encoding="utf-8", newline="") as f:
        return loads(f.read())
