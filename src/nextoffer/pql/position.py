"""Lines and columns of PQL text, and the excerpt with a caret that shows an error's place.

Only ``\\n``, ``\\r\\n`` and ``\\r`` end a line: what editors count and what ``docs/pql.md``
says. ``str.splitlines`` also breaks at ``\\v``, ``\\f``, ``\\x1c``–``\\x1e``, ``\\x85``, U+2028
and U+2029, which would put an error on a line the editor does not have; here those are
characters like any other (whitespace between tokens, or part of a string literal). Columns
count code points. The lexer gives every token its line and column through :class:`Lines`,
so every error — lexer, parser, checker, limits — and :func:`render_error` agree.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right

from nextoffer.errors import PQLError

_BREAK = re.compile(r"\r\n?|\n")


class Lines:
    """Where each line of ``source`` starts; an offset's line and column (both 1-based)."""

    __slots__ = ("source", "starts")

    def __init__(self, source: str) -> None:
        self.source = source
        self.starts = [0, *(found.end() for found in _BREAK.finditer(source))]

    def locate(self, offset: int) -> tuple[int, int]:
        line = bisect_right(self.starts, offset)
        return line, offset - self.starts[line - 1] + 1

    def text(self, line: int) -> str:
        """Line ``line`` without its line break; empty when there is no such line."""
        if not 0 < line <= len(self.starts):
            return ""
        start = self.starts[line - 1]
        end = self.starts[line] if line < len(self.starts) else len(self.source)
        return self.source[start:end].rstrip("\r\n")


def render_error(error: PQLError) -> str:
    """The message with its line and column, then the source line and a caret under the column.

    The caret line repeats the source line's tabs and other spaces up to the column, so the
    caret lines up whatever width the terminal gives them; a wide (East Asian) character
    counts two columns there and a combining mark none. Control characters and U+2028/U+2029
    are shown as one-column stand-ins, so the excerpt stays two lines in any terminal.
    """
    head = f"line {error.line}, column {error.column}: {error.message}"
    if error.source is None:
        return head
    text = Lines(error.source).text(error.line)
    before = text[: max(error.column, 1) - 1]
    pad = "".join(map(_under, before)) + " " * (max(error.column, 1) - 1 - len(before))
    return f"{head}\n  {''.join(map(_shown, text))}\n  {pad}^"


def _shown(char: str) -> str:
    """``char`` as the excerpt prints it: C0 controls and DEL as their Control Pictures
    (U+2400…), other controls and line or paragraph separators as U+FFFD."""
    if char == "\t" or unicodedata.category(char) not in ("Cc", "Zl", "Zp"):
        return char
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)
    return "\u2421" if code == 0x7F else "\ufffd"


def _under(char: str) -> str:
    """What goes under ``char`` (as :func:`_shown` prints it) in the caret line."""
    if char == "\t" or unicodedata.category(char) == "Zs":
        return char  # a space as wide as the one above it, whatever the font
    if unicodedata.combining(char):
        return ""
    return "  " if unicodedata.east_asian_width(char) in ("W", "F") else " "
