"""The PQL inside decision rules and ranking formulas, checked when they are saved.

A rule's condition may be prefixed (``xdm:condition`` with ``xdm:value``) or not
(``condition`` with ``value``); both appear in Adobe's examples (spec §11.6). A ranking
formula keeps its PQL in ``expression`` (or ``xdm:expression``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nextoffer import pql
from nextoffer.errors import PQLError
from nextoffer.repository.objects import RANKING_FORMULA, RULE, ObjectType


@dataclass(frozen=True, slots=True)
class RuleSource:
    text: str
    format: str
    kind: str  # "rule" or "formula"
    pointer: str  # of the value, within the instance


_FIELDS: dict[ObjectType, tuple[str, str]] = {
    RULE: ("condition", "rule"),
    RANKING_FORMULA: ("expression", "formula"),
}


def source_of(object_type: ObjectType, body: Mapping[str, Any]) -> RuleSource | None:
    """The PQL a rule or formula holds, or None for other object types."""
    field = _FIELDS.get(object_type)
    if field is None:
        return None
    key, kind = field
    for ns in ("xdm:", ""):
        holder = body.get(ns + key)
        value = holder.get(ns + "value") if isinstance(holder, Mapping) else None
        if isinstance(holder, Mapping) and isinstance(value, str):
            fmt = holder.get(ns + "format") or "pql/text"
            return RuleSource(value, str(fmt), kind, f"/{ns}{key}/{ns}value")
    return None


#: ``compile(source, *, format, kind)`` raising ``PQLError``: ``pql.compile``, or a cache
#: of its results (the service passes the one its snapshots use).
Compile = Callable[..., Any]


def check(
    object_type: ObjectType,
    body: Mapping[str, Any],
    *,
    prefix: str = "",
    compile_rule: Compile = pql.compile,
) -> None:
    """Raise :class:`PQLError` (422, with line and column) when the PQL is invalid."""
    source = source_of(object_type, body)
    if source is not None:
        check_source(
            source.text,
            format=source.format,
            kind=source.kind,
            pointer=prefix + source.pointer,
            compile_rule=compile_rule,
        )


def check_source(
    text: str,
    *,
    kind: str,
    pointer: str,
    format: str = "pql/text",
    compile_rule: Compile = pql.compile,
) -> None:
    """Compile ``text``; a :class:`PQLError` comes back with the source and the pointer."""
    try:
        compile_rule(text, format=format, kind=kind)
    except PQLError as exc:
        raise PQLError(
            exc.message, line=exc.line, column=exc.column, source=text, pointer=pointer
        ) from exc
