"""Where an error is: only ``\\n``, ``\\r\\n`` and ``\\r`` end a line, columns count code points,
and the excerpt's caret sits under the column whatever width a terminal gives a tab."""

from __future__ import annotations

import pytest

from nextoffer import pql
from nextoffer.errors import PQLError

#: Characters ``str.splitlines`` breaks at that editors and the PQL spec do not.
NOT_BREAKS = ["\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]

#: One error of each stage, on the second line after a space: (text, column of the problem).
STAGES = [
    ("c == 1", 4),  # lexer
    ("c = = 1", 6),  # parser
    ("c.fake()", 4),  # checker
    ("c = " + "(" * 31 + "1" + ")" * 31, 36),  # nesting limit
]


def error(source: str, kind: str = "rule") -> PQLError:
    with pytest.raises(PQLError) as err:
        pql.compile(source, kind=kind)
    return err.value


def where(source: str) -> tuple[int, int]:
    found = error(source)
    assert found.detail.endswith(f"(line {found.line}, column {found.column})")
    return found.line, found.column


@pytest.mark.parametrize("char", NOT_BREAKS)
@pytest.mark.parametrize(("bad", "column"), STAGES)
def test_a_character_splitlines_breaks_at_does_not_end_a_line(char, bad, column):
    assert where(f"a = 1 and{char} b = 2 and\n {bad}\n") == (2, column)


@pytest.mark.parametrize("eol", ["\r\n", "\r"])
@pytest.mark.parametrize(("bad", "column"), STAGES)
def test_crlf_and_cr_end_a_line_like_lf(eol, bad, column):
    text = f"a = 1 and\n b = 2 and\n {bad}\n"
    assert where(text.replace("\n", eol)) == where(text) == (3, column)


@pytest.mark.parametrize("char", NOT_BREAKS)
def test_a_line_break_character_inside_a_string_literal_stays_on_its_line(char):
    assert where(f'a = "x{char}y" and\n b == 1') == (2, 4)
    source = f'a = "x{char}y" and b == 1'
    assert where(source) == (1, source.index("==") + 1)


def test_columns_count_code_points():
    source = 'a = "é😀\U0001f1eb\U0001f1f7" and b == 1'
    assert where(source) == (1, 18) == (1, source.index("==") + 1)


def test_an_error_at_the_end_after_a_final_line_break_is_on_the_empty_last_line():
    assert where("a = 1 and\r\n") == (2, 1)
    assert pql.render_error(error("a = 1 and\r\n")).splitlines()[1:] == ["  ", "  ^"]


def test_the_caret_line_copies_the_tabs_before_the_column():
    rendered = pql.render_error(error("a = 1 and\n\tb = 2 and\n\t\tc = @\n"))
    assert rendered.split("\n") == [
        "line 3, column 7: malformed context reference; expected @{schema} or @event{schema}",
        "  \t\tc = @",
        "  \t\t    ^",
    ]


def test_the_caret_line_copies_other_spaces_and_widens_for_wide_characters():
    rendered = pql.render_error(error('a = "日本\u3000\u00a0x\u0301" and b == 1'))
    assert rendered.split("\n")[1:] == [
        '  a = "日本\u3000\u00a0x\u0301" and b == 1',
        "  " + " " * 5 + " " * 4 + "\u3000\u00a0" + " " * 9 + "^",
    ]


def test_controls_are_shown_as_one_column_stand_ins():
    rendered = pql.render_error(error("a = 1 and\f b\u2028 == 1\r\n"))
    assert rendered.split("\n") == [
        "line 1, column 15: '==' is not PQL; use '='",
        "  a = 1 and\u240c b\ufffd == 1",
        "  " + " " * 14 + "^",
    ]


def test_rendering_without_source_or_outside_it():
    assert pql.render_error(PQLError("bad", line=3, column=2)) == "line 3, column 2: bad"
    assert pql.render_error(PQLError("bad", line=9, column=3, source="a")).split("\n")[1:] == [
        "  ",
        "    ^",
    ]
