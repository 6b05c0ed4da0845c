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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nextoffer.errors import PQLError

from . import ast as A
from .functions import in_segment
from .limits import check_size
from .parser import parse
from .values import path

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

    def read(self, profile: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
        """The feature's value for one request (``None`` when absent)."""
        if self.root == "segment":
            root = profile if isinstance(profile, dict) else dict(profile)
            return in_segment(root, self.name)
        if self.root == "context":
            base: Any = context.get(self.name or "")
        else:
            base = profile if isinstance(profile, dict) else dict(profile)
        return path(base, self.names)


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
