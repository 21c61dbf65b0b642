"""Capped messages: echoed values, name lists and whole lines stay short whatever the input holds."""

from __future__ import annotations

import doctest

from torchpredict import messages
from torchpredict.messages import MAX_LINE, MAX_NAMES, MAX_VALUE, counted, first_line, one_line, quoted, shown


def test_the_examples_in_the_docstrings_hold():
    assert doctest.testmod(messages).failed == 0


def test_a_short_value_is_its_repr_and_a_long_one_is_cut_with_its_length():
    assert shown("forty") == "'forty'"
    assert shown(3.5) == "3.5"
    assert shown("a" * MAX_VALUE) == repr("a" * MAX_VALUE)
    assert shown("a" * 50_000_000) == f"'{'a' * MAX_VALUE}…' (50,000,000 chars)"
    assert shown(list(range(1000))).endswith("… (4,890 chars)")


def test_control_characters_of_a_value_are_escaped_by_its_repr():
    assert shown("a\x1b[2Jb") == repr("a\x1b[2Jb")
    assert "\x1b" not in shown("\x1b" * 100)


def test_a_long_list_shows_its_first_names_and_its_last_and_says_how_many():
    few = [f"x{i}" for i in range(MAX_NAMES)]
    assert quoted(few) == ", ".join(map(repr, few))
    assert counted("unexpected column", few) == f"unexpected column(s) {quoted(few)}"
    many = [f"x{i}" for i in range(10_000)]
    assert counted("unexpected column", many) == "10,000 unexpected columns: 'x0', 'x1', 'x2', 'x3', 'x4', … 'x9999'"
    assert len(counted("missing column", ["n" * 10**6] * 10**4)) < 600


def test_one_line_joins_lines_escapes_control_characters_and_cuts_at_the_limit():
    assert one_line("first\n\n  second\r\nthird") == "first | second | third"
    assert one_line("red \x1b[31m text") == "red \\x1b[31m text"
    cut = one_line("x" * 90_000)
    assert cut == "x" * MAX_LINE + "… (cut at 500 of 90,000 chars)"
    assert one_line("x" * MAX_LINE) == "x" * MAX_LINE


def test_first_line_is_the_one_line_every_error_quotes():
    assert first_line(ValueError("bad value\n  Traceback (most recent call last):\n  ...")) == "bad value"
    assert first_line(OSError("\n  disk   full \x1b[2J\nmore"), with_type=True) == r"OSError: disk full \x1b[2J"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(RuntimeError("x" * 1000), limit=10) == "xxxxxxxxxx… (cut at 10 of 1,000 chars)"
