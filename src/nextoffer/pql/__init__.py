"""The Profile Query Language (PQL): parse, check, compile and evaluate rules and formulas.

Sans-IO: nothing in this package reads files, sockets or the environment; the only clock
read is the default for ``now`` in the public entry points below.

>>> evaluate('age >= 18', profile={"age": 20})
True
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from nextoffer.errors import PQLError

from . import messages as msg
from .ast import BoolOp, Node
from .checker import check
from .compiler import compile_tree
from .features import FeaturePath, feature
from .jsonform import parse_json
from .lexer import tokenize
from .limits import check_nesting, check_reads, check_size
from .parser import parse, parse_tokens
from .position import render_error
from .printer import to_text
from .time import parse_now

__all__ = [
    "CompiledRule",
    "FeaturePath",
    "PQLError",
    "compile",
    "evaluate",
    "feature",
    "parse_source",
    "render_error",
    "to_text",
]

FORMATS = ("pql/text", "pql/json")
KINDS = ("rule", "formula")


def _resolve_now(now: Any) -> datetime:
    """``now`` as given, or the current UTC time — the one clock read of the package."""
    if now is None:
        return datetime.now(UTC)
    resolved = parse_now(now)
    if resolved is None:
        raise PQLError(msg.BAD_NOW.format(value=now))
    return resolved


def parse_source(source: str | dict[str, Any], format: str = "pql/text") -> Node:
    """Parse ``source`` in the given format (no checks, no limits)."""
    if format == "pql/text":
        if not isinstance(source, str):
            raise PQLError(
                msg.TYPE.format(
                    what="pql/text source", expected="a string", got=type(source).__name__
                )
            )
        return parse(source)
    if format == "pql/json":
        return parse_json(source)
    raise PQLError(msg.BAD_FORMAT.format(format=format))


class CompiledRule:
    """A validated, compiled rule or formula; reusable and thread-safe (no state).

    ``evaluate`` is bound at construction to the generated function, which has exactly
    the signature of the method below, so a call costs a single Python frame.
    """

    def __init__(
        self,
        source: str | dict[str, Any],
        *,
        format: str = "pql/text",
        kind: str = "rule",
        _shape: str | None = None,
    ) -> None:
        if kind not in KINDS:
            raise PQLError(msg.BAD_KIND.format(kind=kind))
        if format not in FORMATS:
            raise PQLError(msg.BAD_FORMAT.format(format=format))
        text = source if isinstance(source, str) else None
        if text is not None:
            check_size(text, kind)
        if text is not None and format == "pql/text":
            tokens = tokenize(text)  # lexed once: the nesting limit comes before parse errors
            check_nesting(tokens, text)
            tree = parse_tokens(text, tokens)
        else:
            tree = parse_source(source, format)
            printed = to_text(tree)
            if text is None:
                check_size(printed, kind)
            check_nesting(tokenize(printed), None)
        check(tree, text)
        compiled = compile_tree(tree, shape=_shape or kind, source=text, now_resolver=_resolve_now)
        check_reads(compiled.profile_paths, compiled.context_paths, text)
        self.source = source
        self.format = format
        self.kind = kind
        self.tree = tree
        self.profile_paths: tuple[str, ...] = compiled.profile_paths
        self.context_paths: tuple[str, ...] = compiled.context_paths
        self.evaluate = compiled.function  # type: ignore[method-assign]

    def evaluate(
        self,
        *,
        profile: Any,
        events: Any = None,
        now: Any = None,
        context: Any = None,
        variables: Any = None,
    ) -> Any:
        """Evaluate against one profile. Returns a bool for rules, a number (or None when
        the formula yields no number) for formulas; raises only PQLError."""
        raise NotImplementedError  # replaced per instance in __init__

    @functools.cached_property
    def conjuncts(self) -> tuple[str, ...]:
        """The top-level ``and`` operands as canonical ``pql/text``; the whole expression as
        the only entry when it is not a conjunction.

        Each holds whenever the rule holds (``and`` coerces every operand to a boolean,
        pql.md §2.5), so a part that is false, null or failing for a profile makes the rule
        false for it. The engine uses this to test conditions that every candidate of a
        collection shares once per request (``Pool.required``).
        """
        tree = self.tree
        parts = tree.operands if isinstance(tree, BoolOp) and tree.op == "and" else (tree,)
        return tuple(to_text(part) for part in parts)

    def __repr__(self) -> str:
        return f"CompiledRule(kind={self.kind!r}, format={self.format!r}, source={self.source!r})"


def compile(
    source: str | dict[str, Any], *, format: str = "pql/text", kind: str = "rule"
) -> CompiledRule:
    """Parse, check and compile; raises PQLError when the rule is invalid or over a limit.

    This is also the validator the repository calls when a rule or formula is saved.
    """
    return CompiledRule(source, format=format, kind=kind)


def evaluate(
    source: str | dict[str, Any],
    *,
    profile: Any,
    events: Any = None,
    now: Any = None,
    context: Any = None,
    variables: Any = None,
    format: str = "pql/text",
) -> Any:
    """Compile and evaluate once. Returns what the expression yields when it is a boolean
    or a number; anything else is coerced to a boolean (pql.md §2.5 rule 4)."""
    rule = CompiledRule(source, format=format, kind="rule", _shape="value")
    return rule.evaluate(
        profile=profile, events=events, now=now, context=context, variables=variables
    )
