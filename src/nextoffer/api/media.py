"""Media types: parsing Content-Type and naming what we answer with (spec §3)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from nextoffer.errors import BadRequest, UnsupportedMediaType

RECEIPT = "application/vnd.adobe.platform.xcore.xdm.receipt+json; version=1"
HAL = "application/vnd.adobe.platform.xcore.hal+json"
HOME = "application/vnd.adobe.platform.xcore.home.hal+json"
PROBLEM = "application/problem+json"
JSON = "application/json"

SCHEMA_INSTANCE = "application/schema-instance+json"
PATCH_HAL = "application/vnd.adobe.platform.xcore.patch.hal+json"
JSON_PATCH = "application/json-patch+json"


def hal_of(schema: str) -> str:
    return f'{HAL}; schema="{schema}"'


@dataclass(frozen=True, slots=True)
class MediaType:
    mime: str
    params: dict[str, str]


def _split(value: str) -> list[str]:
    """Split on ``;`` outside double or single quotes."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    escaped = False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif quote and char == "\\":
            current.append(char)
            escaped = True
        elif quote:
            current.append(char)
            if char == quote:
                quote = ""
        elif char in "\"'":
            current.append(char)
            quote = char
        elif char == ";":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> tuple[str, bool]:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\"), True
    return value, False


def parse(value: str | None) -> MediaType | None:
    """Parse a Content-Type value; None when it is missing or blank.

    Clients send the same few values again and again: parsed values are kept (bounded).
    Callers must not change the returned ``params``.

    Tolerates two documented defects: the header name repeated inside the value
    (``Content-Type: application/vnd…``) and an unquoted ``schema=…;version=N`` whose
    version then looks like a parameter of its own.
    """
    if value is None or not value.strip():
        return None
    return _parse(value.strip())


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> MediaType:
    if text.lower().startswith("content-type:"):
        text = text[len("content-type:") :].strip()
    tokens = _split(text)
    mime = tokens[0].strip().lower()
    params: dict[str, str] = {}
    schema_was_bare = False
    for token in tokens[1:]:
        key, _, raw = token.partition("=")
        key = key.strip().lower()
        if not key:
            continue
        raw_value, quoted = _unquote(raw.strip())
        if (
            key == "version"
            and schema_was_bare
            and "schema" in params
            and ";version=" not in params["schema"]
        ):
            params["schema"] += f";version={raw_value}"
            continue
        params[key] = raw_value
        if key == "schema":
            schema_was_bare = not quoted
    return MediaType(mime, params)


XDM = "application/vnd.adobe.xdm+json"
XED_ID = "application/vnd.adobe.xed-id+json"
DECISION_REQUEST = 'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/decision-request;version=1.0"'
DECISION_RESPONSE = 'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/decision-response;version=1.0"'


def require(value: str | None, accepted: tuple[str, ...], *, use: str | None = None) -> MediaType:
    """The request's Content-Type, which must be one of ``accepted``: missing is a 400 (the
    Platform gateway's message), another a 415 naming what to send (``use``, or all)."""
    parsed = parse(value)
    if parsed is None:
        raise BadRequest("A valid content-type must be specified")
    if parsed.mime not in accepted:
        raise UnsupportedMediaType(
            f"Content-Type {parsed.mime!r} is not accepted here; use "
            + (use or f"one of: {', '.join(accepted)}")
        )
    return parsed
