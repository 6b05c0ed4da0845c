"""The PQL syntax tree: frozen dataclasses, each carrying the source span it came from.

Spans never take part in equality (``field(compare=False)``), so two trees parsed from
differently formatted text compare equal when they mean the same thing; the printer
round-trip property relies on that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Span(NamedTuple):
    """Where a node or token sits in the source: 1-based line/column, 0-based offsets.

    A named tuple, not a frozen dataclass like the nodes: as immutable, and built in a
    third of the time (a rule's text makes one per token and per node)."""

    line: int
    column: int
    offset: int
    end: int


NO_SPAN = Span(1, 1, 0, 0)


@dataclass(frozen=True, slots=True)
class Node:
    """Base of every node: ``span`` is where it came from (never part of equality)."""

    span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Literal(Node):
    """``"text"``, ``42``, ``4.5``, ``true``, ``false``, ``null``."""

    value: bool | int | float | str | None


@dataclass(frozen=True, slots=True)
class ListLit(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class ObjectLit(Node):
    entries: tuple[tuple[str, Node], ...]


@dataclass(frozen=True, slots=True)
class Name(Node):
    """An identifier in primary position: a variable, ``xEvent``, ``profile``, a named
    input (``offer``) or a field of the implicit root — resolved by the compiler."""

    name: str


@dataclass(frozen=True, slots=True)
class This(Node):
    """``this``: the current item of the innermost filter / item-relative argument."""


@dataclass(frozen=True, slots=True)
class Param(Node):
    """``$1`` …"""

    index: int


@dataclass(frozen=True, slots=True)
class Context(Node):
    """``@{schema}`` / ``@event{schema}``: a Decisioning-API context object."""

    schema: str
    event_form: bool = False


@dataclass(frozen=True, slots=True)
class Up(Node):
    """``^`` / ``^^`` …: the item of an enclosing filter level (or the root)."""

    levels: int


@dataclass(frozen=True, slots=True)
class Field(Node):
    obj: Node
    name: str


@dataclass(frozen=True, slots=True)
class Method(Node):
    obj: Node
    name: str
    args: tuple[Node, ...]
    #: where the method name itself is (error messages point there)
    name_span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Call(Node):
    """A free function: ``if``, ``date``, ``inSegment``, ``currentMonth`` …"""

    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Filter(Node):
    obj: Node
    cond: Node


@dataclass(frozen=True, slots=True)
class Unary(Node):
    """``-x`` and ``not x`` / ``!x`` (op ``"-"`` or ``"not"``)."""

    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary(Node):
    """Arithmetic and comparison: ``+ - * / %``, ``= != < <= > >=``,
    ``in notIn like matches``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class BoolOp(Node):
    """``and`` / ``or`` over two or more operands (flattened, so long chains stay shallow)."""

    op: str
    operands: tuple[Node, ...]


# ---- time -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelTime(Node):
    """``now``, ``today``, ``yesterday``, ``tomorrow`` (only inside ``occurs``)."""

    word: str


@dataclass(frozen=True, slots=True)
class Period(Node):
    """``this month``, ``last week``, ``next year`` (only inside ``occurs``)."""

    which: str
    unit: str


@dataclass(frozen=True, slots=True)
class OccursSpec(Node):
    """The part after ``occurs`` (also the argument of a CHAIN ``WHEN``).

    ``form`` is ``"on"`` (``times[0]``), ``"between"`` (``times[0]``, ``times[1]``),
    ``"before"``/``"after"``/``"from"`` (direction only) or ``"distance"``
    (``op amount unit direction times[0]``).
    """

    form: str
    times: tuple[Node, ...]
    op: str | None = None
    amount: int | None = None
    unit: str | None = None
    direction: str | None = None


@dataclass(frozen=True, slots=True)
class Occurs(Node):
    subject: Node
    spec: OccursSpec


# ---- collections and binders ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Binding(Node):
    """``V from RANGE [where COND]``."""

    var: str
    range: Node
    cond: Node | None
    colon: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class Select(Node):
    """``select`` / ``exists`` / ``forall`` over one or more bindings."""

    kind: str
    bindings: tuple[Binding, ...]


@dataclass(frozen=True, slots=True)
class Aggregate(Node):
    """``sum E over bindings`` (``value`` None in the short form ``sum X from a``)."""

    fn: str
    value: Node | None
    bindings: tuple[Binding, ...]


@dataclass(frozen=True, slots=True)
class Let(Node):
    var: str
    value: Node
    body: Node


@dataclass(frozen=True, slots=True)
class Lambda(Node):
    """``(A, B) => body``; at the top of a query it is the lambda header."""

    params: tuple[str, ...]
    body: Node


@dataclass(frozen=True, slots=True)
class ChainStep(Node):
    label: str
    what: Node
    when: OccursSpec | None = None
    count: int | None = None
    where: Node | None = None


@dataclass(frozen=True, slots=True)
class Chain(Node):
    """``CHAIN(events, timestampField, [steps])``."""

    events: Node
    ts_field: str
    steps: tuple[ChainStep, ...]


#: Each node class's fields other than ``span``, in declaration order.
_FIELDS: dict[type, tuple[str, ...]] = {}


def children(node: Node) -> tuple[Node, ...]:
    """The direct child nodes, in source order (used by walkers)."""
    names = _FIELDS.get(type(node))
    if names is None:
        names = tuple(name for name in node.__dataclass_fields__ if name != "span")
        _FIELDS[type(node)] = names
    out: list[Node] = []
    for name in names:
        value = getattr(node, name)
        if isinstance(value, Node):
            out.append(value)
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, Node):
                    out.append(item)
                elif isinstance(item, tuple):
                    out.extend(x for x in item if isinstance(x, Node))
    return tuple(out)
