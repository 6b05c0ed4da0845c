"""The Decisioning guardrails on rule text (size, nesting) and on what a rule reads."""

from __future__ import annotations

from . import messages as msg
from .ast import Span
from .lexer import Token
from .semantics import MAX_BYTES, MAX_CONTEXT_ATTRIBUTES, MAX_NESTING, MAX_PROFILE_ATTRIBUTES


def check_size(text: str, kind: str) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    limit = MAX_BYTES[kind]
    if size > limit:
        raise msg.fail(msg.LIMIT_SIZE.format(kind=kind, size=size, limit=limit), None, None)


def check_nesting(tokens: list[Token], source: str | None) -> None:
    """Deepest stack of open brackets; Adobe counts ``)`` — we count every bracket kind."""
    depth = 0
    for tok in tokens:
        if tok.kind != "op":
            continue
        if tok.value in ("(", "[", "{"):
            depth += 1
            if depth > MAX_NESTING:
                raise msg.fail(
                    msg.LIMIT_NESTING.format(depth=depth, limit=MAX_NESTING),
                    tok.span if source is not None else None,
                    source,
                )
        elif tok.value in (")", "]", "}"):
            depth = max(depth - 1, 0)


def check_reads(
    profile_paths: tuple[str, ...], context_paths: tuple[str, ...], source: str | None
) -> None:
    if len(profile_paths) > MAX_PROFILE_ATTRIBUTES:
        raise msg.fail(
            msg.LIMIT_PROFILE_ATTRS.format(count=len(profile_paths), limit=MAX_PROFILE_ATTRIBUTES),
            Span(1, 1, 0, 0),
            source,
        )
    if len(context_paths) > MAX_CONTEXT_ATTRIBUTES:
        raise msg.fail(
            msg.LIMIT_CONTEXT_ATTRS.format(count=len(context_paths), limit=MAX_CONTEXT_ATTRIBUTES),
            Span(1, 1, 0, 0),
            source,
        )
