"""Validation of instance bodies against the JSON Schemas nextoffer ships (``schemas/``).

Two validators of the same schemas: ``jsonschema-rs`` (compiled, ~60 times faster) says
whether a body is valid; only for one it rejects does ``jsonschema`` list the violations,
with the messages and pointers clients see — and a body ``jsonschema`` finds nothing wrong
with is accepted, so the fast one can only make validation cheaper, never stricter.

Pure: no IO beyond reading the packaged schema files once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import jsonpointer
import jsonschema_rs

from nextoffer.errors import PayloadTooLarge, Unprocessable
from nextoffer.ids import parse_datetime
from nextoffer.repository.objects import FALLBACK_OFFER, PERSONALIZED_OFFER, ObjectType

if TYPE_CHECKING:
    import jsonschema

#: "The size of an offer including all its representations cannot exceed 300KB" (spec §10).
MAX_OFFER_BYTES = 300 * 1024


def _is_datetime(value: object) -> bool:
    if isinstance(value, str):
        parse_datetime(value)
    return True


def _is_rfc3339(value: str) -> bool:
    try:
        return _is_datetime(value)
    except ValueError:
        return False


@cache
def _schema(object_type: ObjectType) -> dict[str, Any]:
    text = (
        resources.files("nextoffer.repository")
        .joinpath(f"schemas/{object_type.name}.schema.json")
        .read_text("utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def validator(object_type: ObjectType) -> jsonschema.Draft202012Validator:
    """The validator whose errors are reported (``jsonschema`` is loaded by the first body
    the fast one rejects: a process that only decides never needs it)."""
    from jsonschema import Draft202012Validator, FormatChecker

    schema = _schema(object_type)
    Draft202012Validator.check_schema(schema)
    formats = FormatChecker(formats=())
    formats.checks("date-time", raises=ValueError)(_is_datetime)
    return Draft202012Validator(schema, format_checker=formats)


@cache
def fast_validator(object_type: ObjectType) -> Any:
    """The validator that says whether a body is valid (``jsonschema-rs``), with the same
    ``date-time`` check."""
    return jsonschema_rs.validator_for(
        _schema(object_type), formats={"date-time": _is_rfc3339}, validate_formats=True
    )


def pointer(parts: Iterator[Any] | list[Any], prefix: str = "") -> str:
    """The JSON pointer (RFC 6901) of the member or item at ``parts``, after ``prefix``."""
    return prefix + "".join("/" + jsonpointer.escape(str(p)) for p in parts)


#: What refuses a body :func:`nul_at` finds a NUL in.
NUL_REFUSED = "a NUL character (U+0000) cannot be stored"


def nul_at(value: Any, *, prefix: str = "") -> str | None:
    """The pointer of a string holding a NUL character (U+0000), or of the object whose
    member name holds one; ``None`` when there is none. PostgreSQL's text cannot hold a
    NUL, so neither backend stores one (docs/api.md, Errors)."""
    stack: list[tuple[Any, list[Any]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return pointer(path, prefix)
        elif isinstance(node, dict):
            for name, child in node.items():
                if "\x00" in name:
                    return pointer(path, prefix)
                stack.append((child, [*path, name]))
        elif isinstance(node, list):
            stack.extend((child, [*path, i]) for i, child in enumerate(node))
    return None


#: What refuses a body :func:`long_integer_at` finds an integer in.
LONG_INTEGER_REFUSED = (
    "an integer past 64 bits (below -2**63 or above 2**64 - 1) cannot be kept exactly;"
    " send it as a string"
)
#: A number of 19 digits or more where a value starts (after ``:``, ``,`` or ``[``) may
#: be past 64 bits: only then is a text read again, exactly (``orjson`` reads such an
#: integer as a float, dropping digits). Digits in a string (an ECID's 38) do not count;
#: the rare string that looks like one only costs the second read.
_LONG_DIGITS = re.compile(rb"(?:\A|[:,\[])\s*-?\d{19}")
#: Every digit as ``0``: a text without 19 zeros in a row after it has no run of 19
#: digits, so :data:`_LONG_DIGITS` cannot match it. ``translate`` and ``in`` run in C,
#: at a small fraction of the pattern's cost (which scans position by position, its
#: first item an alternation): every JSON body a request sends is checked.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19


def long_integer_at(raw: bytes, *, prefix: str = "") -> str | None:
    """The pointer of an integer past 64 bits in the JSON text ``raw`` (valid JSON), or
    ``None``; ``prefix`` when one is too long even to read (over 4,300 digits)."""
    if _NINETEEN_DIGITS not in raw.translate(_DIGITS_AS_ZERO) or _LONG_DIGITS.search(raw) is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:  # past the interpreter's limit on an integer's digits
        return prefix
    return long_integer_in(value, prefix=prefix)


def long_integer_in(value: Any, *, prefix: str = "") -> str | None:
    """The pointer of an integer past 64 bits in ``value``, or ``None``: neither backend
    stores one (a body read by :func:`long_integer_at`, or built in Python: the console's
    forms, an embedding application)."""
    stack: list[tuple[Any, list[Any]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if type(node) is int and not -(2**63) <= node < 2**64:
            return pointer(path, prefix)
        if isinstance(node, dict):
            stack.extend((child, [*path, name]) for name, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, [*path, i]) for i, child in enumerate(node))
    return None


#: How much of a value a validation message quotes.
_QUOTED = 80


def _quoted(value: Any) -> str:
    """``value`` as the client wrote it, in JSON (``null``, ``true``, ``{"a": 1}``), cut
    short past :data:`_QUOTED` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _QUOTED else text[: _QUOTED - 1] + "…"


def _describe(error: jsonschema.ValidationError) -> str:
    # Alternatives that differ only in what must be present (a member in either spelling,
    # ``xdm:condition`` or ``condition``): name what the first one lacks.
    alternatives = error.context if error.validator in ("anyOf", "oneOf") else None
    if alternatives and all(e.validator == "required" for e in alternatives):
        return _describe(min(alternatives, key=lambda e: list(e.relative_schema_path)))
    if error.validator == "required":
        return str(error.message).replace("is a required property", "is required")
    if error.validator == "pattern" and isinstance(error.instance, str):
        return f"{_quoted(error.instance)} is not a valid reference of the expected type"
    if error.validator == "format":
        return f"{_quoted(error.instance)} is not an RFC 3339 date-time"
    if error.validator == "minLength" and error.instance == "":
        return "must not be empty"
    if error.validator == "maxLength" and isinstance(error.instance, str):
        return f"{_quoted(error.instance)} is longer than {error.validator_value} characters"
    message = str(error.message)
    # jsonschema quotes the value in Python's notation (None, True, {'a': 1}); the
    # client sent JSON, so it is quoted back in JSON.
    shown = repr(error.instance)
    if message.startswith(shown):
        return _quoted(error.instance) + message[len(shown) :]
    return message


def validate(object_type: ObjectType, body: Mapping[str, Any], *, prefix: str = "") -> None:
    """Raise :class:`Unprocessable` listing every schema violation, each with its pointer
    (a NUL character anywhere first: :func:`nul_at`)."""
    where = nul_at(body, prefix=prefix)
    if where is not None:
        raise Unprocessable(f"{where or '/'}: {NUL_REFUSED}", pointer=where or "/")
    where = long_integer_in(body, prefix=prefix)
    if where is not None:
        raise Unprocessable(f"{where or '/'}: {LONG_INTEGER_REFUSED}", pointer=where or "/")
    if object_type in (PERSONALIZED_OFFER, FALLBACK_OFFER):
        size = len(json.dumps(body, ensure_ascii=False).encode("utf-8"))
        if size > MAX_OFFER_BYTES:
            raise PayloadTooLarge(
                f"an offer including all its representations may not exceed 300 KB; "
                f"this one is {size} bytes",
                pointer=prefix or "/",
            )
    if fast_validator(object_type).is_valid(body):
        return
    errors = sorted(validator(object_type).iter_errors(body), key=lambda e: list(e.path))
    if not errors:
        return
    listed = [
        {"pointer": pointer(list(e.path), prefix) or "/", "message": _describe(e)} for e in errors
    ]
    first = listed[0]
    more = f" (and {len(listed) - 1} more)" if len(listed) > 1 else ""
    raise Unprocessable(
        f"invalid {object_type.label}: {first['pointer']}: {first['message']}{more}",
        pointer=first["pointer"],
        errors=listed,
    )
