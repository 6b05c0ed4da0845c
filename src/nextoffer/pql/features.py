"""Feature paths: the PQL a ranking strategy reads its features with.

A personalized ranking strategy (``xdm:features``) names what its model sees as PQL
expressions of three shapes, and only these:

* a profile path — ``person.gender``, ``loyalty.tier`` (``profile.`` may prefix it);
* a context path — ``@{schema}.field`` (``@event{…}`` is the same), read from the
  decision request's context data;
* a segment — ``inSegment("<segment id>")``, true when the profile is a member.

:func:`feature` parses and checks one (the repository calls it when a strategy is saved,
the engine when it builds the catalog); :meth:`FeaturePath.read` reads its value for a
request, with the same path semantics as PQL itself (``values.path``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nextoffer.errors import PQLError

from . import ast as A
from .functions import in_segment
from .limits import check_size
from .parser import parse
from .values import path, project

#: Reads one feature from a profile (a ``dict``) and the request's context data.
Reader = Callable[[dict[str, Any], Mapping[str, Any]], Any]

#: Names that are PQL inputs other than the profile: not a feature's root.
_NOT_PROFILE = frozenset({"xEvent", "offer", "this"})

_SHAPES = (
    "a feature is a profile path (person.gender), a context path (@{schema}.field) or "
    'inSegment("<segment id>")'
)


@dataclass(frozen=True, slots=True)
class FeaturePath:
    """One checked feature: where its value is read from."""

    source: str
    #: ``"profile"``, ``"context"`` or ``"segment"``.
    root: str
    #: The context schema (``root == "context"``) or the segment id (``"segment"``).
    name: str | None
    #: Field names below the root.
    names: tuple[str, ...]
    #: The read specialised to this feature's shape (``read`` without its dispatch; a
    #: strategy reads every feature on every decision).
    reader: Reader = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reader", _reader(self.root, self.name, self.names))

    def read(self, profile: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
        """The feature's value for one request (``None`` when absent)."""
        return self.reader(profile if profile.__class__ is dict else dict(profile), context)


def _reader(root: str, name: str | None, names: tuple[str, ...]) -> Reader:
    """A reader with ``values.path`` semantics, specialised to one feature's shape."""
    if root == "segment":
        return lambda profile, context: in_segment(profile, name)
    if len(names) == 1:
        (only,) = names

        def one(base: Any) -> Any:
            cls = base.__class__
            if cls is dict:
                return base.get(only)
            return project(base, only) if cls is list else None

        if root == "context":
            return lambda profile, context: one(context.get(name or ""))
        return lambda profile, context: profile.get(only)
    if root == "context":
        return lambda profile, context: path(context.get(name or ""), names)
    return lambda profile, context: path(profile, names)


def feature(source: str) -> FeaturePath:
    """Parse ``source`` as a feature; :class:`PQLError` (with line and column) otherwise."""
    if not isinstance(source, str):
        raise PQLError(_SHAPES)
    check_size(source, "rule")
    tree = parse(source)
    names: list[str] = []
    node: A.Node = tree
    while isinstance(node, A.Field):
        names.append(node.name)
        node = node.obj
    names.reverse()
    if isinstance(node, A.Name) and node.name not in _NOT_PROFILE:
        chain = tuple(names) if node.name == "profile" else (node.name, *names)
        if chain:
            return FeaturePath(source, "profile", None, chain)
    elif isinstance(node, A.Context) and names:
        return FeaturePath(source, "context", node.schema, tuple(names))
    elif (
        isinstance(node, A.Call)
        and not names
        and node.name == "inSegment"
        and len(node.args) == 1
        and isinstance(node.args[0], A.Literal)
        and isinstance(node.args[0].value, str)
        and node.args[0].value
    ):
        return FeaturePath(source, "segment", node.args[0].value, ())
    span = tree.span
    raise PQLError(_SHAPES, line=span.line, column=span.column, source=source)
