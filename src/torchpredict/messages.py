"""Short messages from hostile input: echoed values, lists of names and whole error lines, each capped.

An input (or a bundle) can hold a 50 MB field, a 5 MB column name or 10,000 columns, and an error that quotes
them in full is a line nobody can read (or a terminal can print). A message quotes enough to find the problem
and says how much it left out: `'aaaa…' (50,000,000 chars)`, `10,000 unexpected columns: 'x0', 'x1', … 'x9999'`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MAX_LINE", "MAX_NAMES", "MAX_REASON", "MAX_VALUE", "counted", "described", "first_line", "one_line",
           "quoted", "shown"]

MAX_VALUE = 50  # characters of one echoed value or name
MAX_NAMES = 6  # names listed in full; a longer list shows the first MAX_NAMES - 1, '…' and the last
MAX_LINE = 500  # characters of a whole error line (the CLI's last safety net)
MAX_REASON = 300  # characters of another library's error quoted inside one of ours
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # what a terminal could act on; tabs stay


def shown(value: Any, limit: int = MAX_VALUE) -> str:
    """repr(value), its text cut to `limit` characters with how long it was.

    >>> shown("forty")
    "'forty'"
    >>> shown("a" * 50_000_000, limit=4)
    "'aaaa…' (50,000,000 chars)"
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        head = repr(value[:limit])
        return f"{head[:-1]}…{head[-1]} ({len(value):,} chars)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} chars)"


def quoted(names: Sequence[Any]) -> str:
    """The names, each shown(); a long list as its first names, '…' and the last one.

    >>> quoted(["a", "b"])
    "'a', 'b'"
    >>> quoted([f"x{i}" for i in range(10_000)])
    "'x0', 'x1', 'x2', 'x3', 'x4', … 'x9999'"
    """
    if len(names) <= MAX_NAMES:
        return ", ".join(shown(n) for n in names)
    return f"{', '.join(shown(n) for n in names[:MAX_NAMES - 1])}, … {shown(names[-1])}"


def counted(what: str, names: Sequence[Any]) -> str:
    """"what(s) 'a', 'b'", or for a long list the count first, so that the names left out are not missed.

    >>> counted("unexpected column", ["id"])
    "unexpected column(s) 'id'"
    >>> counted("unexpected column", [f"x{i}" for i in range(10_000)])
    "10,000 unexpected columns: 'x0', 'x1', 'x2', 'x3', 'x4', … 'x9999'"
    """
    if len(names) <= MAX_NAMES:
        return f"{what}(s) {quoted(names)}"
    return f"{len(names):,} {what}s: {quoted(names)}"


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """text as one line a terminal prints as it is: line breaks joined by ' | ', control characters escaped,
    cut to `limit` characters with a marker saying how long it was.

    >>> one_line("first\\nsecond")
    'first | second'
    >>> one_line("x" * 1000, limit=10)
    'xxxxxxxxxx… (cut at 10 of 1,000 chars)'
    """
    text = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else f"{text[:limit]}… (cut at {limit:,} of {len(text):,} chars)"


def first_line(exc: BaseException, *, with_type: bool = False, limit: int = MAX_REASON) -> str:
    """The first non-blank line of an exception's message, to quote another library's error in one of ours:
    spaces collapsed, control characters escaped, cut to `limit`; 'Type: line' with `with_type`, and the
    type's name alone when the message is empty.

    >>> first_line(ValueError("bad value\\n  traceback details"))
    'bad value'
    >>> first_line(KeyError(), with_type=True)
    'KeyError'
    >>> first_line(OSError("disk  full"), with_type=True)
    'OSError: disk full'
    """
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = one_line(" ".join(lines[0].split()), limit=limit) if lines else ""
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}" if with_type else text


def described(value: Any) -> str:
    """A JSON value as an error shows it: containers by kind and size, scalars as they are, long ones cut.

    >>> described({"a": 1}), described([1, 2]), described(None), described(2.5)
    ('an object', 'a list of 2', 'null', '2.5')
    """
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return "null" if value is None else shown(value)
