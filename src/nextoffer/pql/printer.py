"""AST → ``pql/text``. ``parse(to_text(tree)) == tree`` for every tree the parser builds
(spans aside), which the property tests check. Parentheses only where precedence needs them.
"""

from __future__ import annotations

import json

from . import ast as A

# precedence: higher binds tighter
_PREFIX, _OR, _AND, _NOT, _CMP, _ADD, _MUL, _UNARY, _POSTFIX = range(9)
_BINARY_PREC = {"+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "%": _MUL}
_PLURAL = {"century": "centuries", "millennium": "millennia"}


def to_text(node: A.Node) -> str:
    """Render a tree as PQL text."""
    return _Printer().show(node, _PREFIX)


def _prec(node: A.Node) -> int:
    if isinstance(node, A.Select | A.Aggregate | A.Let | A.Lambda):
        return _PREFIX
    if isinstance(node, A.BoolOp):
        return _OR if node.op == "or" else _AND
    if isinstance(node, A.Unary):
        return _NOT if node.op == "not" else _UNARY
    if isinstance(node, A.Binary):
        return _BINARY_PREC.get(node.op, _CMP)
    if isinstance(node, A.Occurs):
        return _CMP
    if (
        isinstance(node, A.Literal)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
        and (node.value < 0 or str(node.value)[0] == "-")
    ):
        return _UNARY
    return _POSTFIX


def _literal(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return repr(value)
    return str(value)


class _Printer:
    def show(self, node: A.Node, context: int) -> str:
        text = getattr(self, "_" + type(node).__name__)(node)
        return f"({text})" if _prec(node) < context else text

    def _args(self, args: tuple[A.Node, ...]) -> str:
        return ", ".join(self.show(a, _OR) for a in args)

    def _Literal(self, n: A.Literal) -> str:
        return _literal(n.value)

    def _ListLit(self, n: A.ListLit) -> str:
        return "[" + self._args(n.items) + "]"

    def _ObjectLit(self, n: A.ObjectLit) -> str:
        inner = ", ".join(f"{_literal(k)}: {self.show(v, _OR)}" for k, v in n.entries)
        return "{" + inner + "}"

    def _Name(self, n: A.Name) -> str:
        return n.name

    def _This(self, n: A.This) -> str:
        return "this"

    def _Param(self, n: A.Param) -> str:
        return f"${n.index}"

    def _Context(self, n: A.Context) -> str:
        return ("@event{" if n.event_form else "@{") + n.schema + "}"

    def _Up(self, n: A.Up) -> str:
        return "^" * n.levels

    def _Field(self, n: A.Field) -> str:
        return f"{self.show(n.obj, _POSTFIX)}.{n.name}"

    def _Method(self, n: A.Method) -> str:
        return f"{self.show(n.obj, _POSTFIX)}.{n.name}({self._args(n.args)})"

    def _Call(self, n: A.Call) -> str:
        return f"{n.name}({self._args(n.args)})"

    def _Filter(self, n: A.Filter) -> str:
        return f"{self.show(n.obj, _POSTFIX)}[{self.show(n.cond, _PREFIX)}]"

    def _Unary(self, n: A.Unary) -> str:
        if n.op == "not":
            return "not " + self.show(n.operand, _NOT)
        return "-" + self.show(n.operand, _UNARY)

    def _BoolOp(self, n: A.BoolOp) -> str:
        inner = _AND if n.op == "or" else _NOT
        return f" {n.op} ".join(self.show(x, inner) for x in n.operands)

    def _Binary(self, n: A.Binary) -> str:
        prec = _BINARY_PREC.get(n.op, _CMP)
        left = self.show(n.left, prec if prec != _CMP else _ADD)
        right = self.show(n.right, prec + 1 if prec != _CMP else _ADD)
        return f"{left} {n.op} {right}"

    def _time(self, n: A.Node) -> str:
        if isinstance(n, A.RelTime):
            return n.word
        if isinstance(n, A.Period):
            return f"{n.which} {n.unit}"
        return self.show(n, _ADD)

    def spec(self, s: A.OccursSpec) -> str:
        if s.form == "on":
            return "on " + self._time(s.times[0])
        if s.form == "between":
            return f"between {self._time(s.times[0])} and {self._time(s.times[1])}"
        if s.form == "distance":
            unit = str(s.unit)
            if s.amount != 1:
                unit = _PLURAL.get(unit, unit + "s")
            return f"{s.op} {s.amount} {unit} {s.direction} {self._time(s.times[0])}"
        return f"{s.form} {self._time(s.times[0])}"

    def _Occurs(self, n: A.Occurs) -> str:
        return f"{self.show(n.subject, _ADD)} occurs {self.spec(n.spec)}"

    def _bindings(self, bindings: tuple[A.Binding, ...]) -> str:
        parts = []
        for b in bindings:
            text = f"{b.var} from {self.show(b.range, _POSTFIX)}"
            if b.cond is not None:
                text += " where " + self.show(b.cond, _OR)
            parts.append(text)
        return ", ".join(parts)

    def _Select(self, n: A.Select) -> str:
        return f"{n.kind} {self._bindings(n.bindings)}"

    def _Aggregate(self, n: A.Aggregate) -> str:
        if n.value is None:
            return f"{n.fn} {self._bindings(n.bindings)}"
        value = self.show(n.value, _ADD)
        if not isinstance(n.value, A.Name | A.Field | A.Literal) or value.startswith("-"):
            value = f"({value})"
        return f"{n.fn} {value} over {self._bindings(n.bindings)}"

    def _Let(self, n: A.Let) -> str:
        return f"let {n.var} = {self.show(n.value, _ADD)} in {self.show(n.body, _PREFIX)}"

    def _Lambda(self, n: A.Lambda) -> str:
        return f"({', '.join(n.params)}) => {self.show(n.body, _PREFIX)}"

    def _Chain(self, n: A.Chain) -> str:
        steps = []
        for s in n.steps:
            text = f"{s.label}: WHAT({self.show(s.what, _PREFIX)})"
            if s.when is not None:
                text += f" WHEN({self.spec(s.when)})"
            if s.count is not None:
                text += f" COUNT({s.count})"
            if s.where is not None:
                text += f" WHERE({self.show(s.where, _PREFIX)})"
            steps.append(text)
        return f"chain({self.show(n.events, _POSTFIX)}, {n.ts_field}, [{', '.join(steps)}])"
