"""Static checks on a parsed tree: known functions, arity, obvious type errors, regexes,
``^``/``$n`` references. Raises the first problem as a PQLError at its span.

Schema-less by design: a path's type is unknown until run time, so only literals are
type-checked here; mismatches on data follow the null rules at run time.
"""

from __future__ import annotations

from . import ast as A
from . import messages as msg
from . import regex
from .functions import FUNCTIONS, METHODS
from .semantics import MAX_REGEX_LENGTH, MAX_REGEX_OPTIONALS, MAX_REGEX_REPEATS
from .time import to_instant

_ARITH = frozenset({"+", "-", "*", "/", "%"})


def _kind(node: A.Node) -> str | None:
    """The static kind of a literal-ish node, or None when unknown."""
    if isinstance(node, A.Literal):
        v = node.value
        if v is None:
            return None
        if v is True or v is False:
            return "a boolean"
        return "a number" if isinstance(v, int | float) else "a string"
    if isinstance(node, A.ListLit):
        return "an array"
    if isinstance(node, A.ObjectLit):
        return "an object"
    if isinstance(node, A.BoolOp) or (isinstance(node, A.Unary) and node.op == "not"):
        return "a boolean"
    if isinstance(node, A.Binary) and node.op not in _ARITH:
        return "a boolean"
    return None


class Checker:
    def __init__(self, source: str | None) -> None:
        self.source = source

    def fail(self, message: str, node: A.Node) -> Exception:
        return msg.fail(message, node.span, self.source)

    def check(self, tree: A.Node) -> None:
        if isinstance(tree, A.Lambda) and len(tree.params) != 1:
            raise self.fail(
                msg.TYPE.format(
                    what="a lambda header",
                    expected="one parameter (the profile)",
                    got=len(tree.params),
                ),
                tree,
            )
        self.visit(tree, 0)

    def visit(self, node: A.Node, depth: int) -> None:
        handler = getattr(self, "_" + type(node).__name__, None)
        if handler is not None:
            handler(node, depth)
            return
        for child in A.children(node):
            self.visit(child, depth)

    def _Param(self, node: A.Param, depth: int) -> None:
        if node.index != 1:
            raise self.fail(msg.UNKNOWN_PARAM.format(index=node.index), node)

    def _Up(self, node: A.Up, depth: int) -> None:
        if node.levels > depth:
            raise self.fail(msg.UP_TOO_FAR.format(carets="^" * node.levels), node)

    def _Filter(self, node: A.Filter, depth: int) -> None:
        self.visit(node.obj, depth)
        self.visit(node.cond, depth + 1)

    def _Method(self, node: A.Method, depth: int) -> None:
        sig = METHODS.get(node.name)
        if sig is None:
            raise msg.fail(msg.UNKNOWN_METHOD.format(name=node.name), node.name_span, self.source)
        self._arity(node.name, sig.required, len(sig.args), node)
        self.visit(node.obj, depth)
        for arg, kind in zip(node.args, sig.args, strict=False):
            self.visit(arg, depth + 1 if kind == "i" and not isinstance(arg, A.Lambda) else depth)
        if node.name in ("matches", "regexGroup") and node.args:
            self._regex(node.args[0])

    def _Call(self, node: A.Call, depth: int) -> None:
        sig = FUNCTIONS.get(node.name)
        if sig is None:
            raise self.fail(msg.UNKNOWN_FUNCTION.format(name=node.name), node)
        self._arity(node.name, sig.required, len(sig.args), node)
        if node.name == "date":
            for arg in node.args:
                kind = _kind(arg)
                if kind not in (None, "a number"):
                    raise self.fail(
                        msg.TYPE.format(
                            what="an argument of date()", expected="a number", got=kind
                        ),
                        arg,
                    )
        for arg in node.args:
            self.visit(arg, depth)

    def _arity(self, name: str, required: int, maximum: int, node: A.Method | A.Call) -> None:
        got = len(node.args)
        if required <= got <= maximum:
            return
        expected = str(required) if required == maximum else f"{required} to {maximum}"
        raise self.fail(msg.ARITY.format(name=name, expected=expected, got=got), node)

    def _regex(self, node: A.Node) -> None:
        if not (isinstance(node, A.Literal) and isinstance(node.value, str)):
            return
        problem = regex.problem(node.value)
        if problem == "too long":
            raise self.fail(msg.REGEX_TOO_LONG.format(limit=MAX_REGEX_LENGTH), node)
        if problem == "nested":
            raise self.fail(msg.REGEX_NESTED, node)
        if problem == "complex":
            text = msg.REGEX_COMPLEX.format(limit=MAX_REGEX_REPEATS, optional=MAX_REGEX_OPTIONALS)
            raise self.fail(text, node)
        if problem is not None:
            raise self.fail(msg.REGEX_INVALID.format(reason=problem[len("invalid: ") :]), node)

    def _Binary(self, node: A.Binary, depth: int) -> None:
        self.visit(node.left, depth)
        self.visit(node.right, depth)
        if node.op in _ARITH:
            for side in (node.left, node.right):
                kind = _kind(side)
                if kind not in (None, "a number"):
                    raise self.fail(
                        msg.TYPE.format(
                            what=f"an operand of '{node.op}'", expected="a number", got=kind
                        ),
                        side,
                    )
        elif node.op in ("in", "notIn"):
            kind = _kind(node.right)
            if kind not in (None, "an array"):
                raise self.fail(
                    msg.TYPE.format(
                        what=f"the right side of '{node.op}'", expected="an array", got=kind
                    ),
                    node.right,
                )
        elif node.op == "matches":
            self._regex(node.right)

    def _Unary(self, node: A.Unary, depth: int) -> None:
        self.visit(node.operand, depth)
        if node.op == "-":
            kind = _kind(node.operand)
            if kind not in (None, "a number"):
                raise self.fail(
                    msg.TYPE.format(what="the operand of '-'", expected="a number", got=kind),
                    node.operand,
                )

    def _Occurs(self, node: A.Occurs, depth: int) -> None:
        kind = _kind(node.subject)
        if kind is not None and kind != "a string":
            raise self.fail(
                msg.TYPE.format(what="the subject of 'occurs'", expected="a timestamp", got=kind),
                node.subject,
            )
        if (
            isinstance(node.subject, A.Literal)
            and isinstance(node.subject.value, str)
            and to_instant(node.subject.value) is None
        ):
            raise self.fail(
                msg.TYPE.format(
                    what="the subject of 'occurs'", expected="a timestamp", got="a string"
                ),
                node.subject,
            )
        self.visit(node.subject, depth)
        self._spec(node.spec, depth)

    def _spec(self, spec: A.OccursSpec, depth: int) -> None:
        for ref in spec.times:
            kind = _kind(ref)
            if kind is not None and kind != "a string" and kind != "a number":
                raise self.fail(
                    msg.TYPE.format(what="a time in 'occurs'", expected="a timestamp", got=kind),
                    ref,
                )
            self.visit(ref, depth)

    def _Chain(self, node: A.Chain, depth: int) -> None:
        self.visit(node.events, depth)
        for step in node.steps:
            self.visit(step.what, depth + 1)
            if step.when is not None:
                self._spec(step.when, depth)
            if step.where is not None:
                self.visit(step.where, depth + 1)


def check(tree: A.Node, source: str | None) -> None:
    """Raise PQLError for the first static problem in ``tree``."""
    Checker(source).check(tree)
