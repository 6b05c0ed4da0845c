"""JSON given to a command as a file (or ``-``, standard input): read whole, as UTF-8,
and checked for the shape the command needs; every problem is a :class:`BadRequest`
naming the option and the file."""

from __future__ import annotations

import json
from typing import IO, Any

from nextoffer.errors import BadRequest

#: The JSON type a shape names, as messages say it.
SHAPES: dict[type, str] = {dict: "a JSON object", list: "a JSON array"}


def named(option: str, name: str) -> str:
    """``--events events.json`` (``--events -`` for standard input)."""
    return f"{option} {'-' if name in ('<stdin>', '-') else name}"


def parse(text: str | bytes, what: str) -> Any:
    """``text`` parsed, or :class:`BadRequest` saying what is wrong with ``what``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"{what} is not UTF-8 text ({not_utf8(exc)})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply to be read") from None


def not_utf8(exc: UnicodeDecodeError) -> str:
    """Where the first byte that is not UTF-8 is: ``byte 0xff at offset 5``."""
    return f"byte {exc.object[exc.start]:#04x} at offset {exc.start}"


def load(stream: IO[bytes], option: str, shape: type | None = None) -> Any:
    """The JSON ``stream`` holds (``option``'s file), of ``shape`` when one is given."""
    what = named(option, getattr(stream, "name", "-"))
    value = parse(stream.read(), what)
    if shape is not None and not isinstance(value, shape):
        raise BadRequest(f"{what} must hold {SHAPES[shape]}")
    return value


def load_path(path: str, option: str, shape: type | None = None) -> Any:
    """:func:`load` for a path."""
    with open(path, "rb") as handle:
        return load(handle, option, shape)


def line_problem(number: int, line: bytes, exc: ValueError) -> str:
    """``line N, column C: what`` for a JSON line the parser refused (``exc``: orjson's
    or json's ``JSONDecodeError``, whose own position counts the line's newline as a
    line of its own), or ``line N: not UTF-8 text (…)``."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"line {number}: not UTF-8 text ({not_utf8(bad)})"
    message = getattr(exc, "msg", str(exc))
    position = getattr(exc, "pos", None)
    if position is None:
        return f"line {number}: {message}"
    column = min(int(position), len(text.rstrip("\r\n"))) + 1
    return f"line {number}, column {column}: {message}"
