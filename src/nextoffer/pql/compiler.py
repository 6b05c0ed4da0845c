"""Checked AST → a Python function, built as Python ``ast`` nodes and compiled.

Why this is safe: no text is ever generated or executed. PQL strings and numbers become
values in the function's closure (free variables ``_k1``, ``_k2`` … named by the
compiler), ``true``/``false``/``null``, field names and schema names are ``ast.Constant``
nodes passed as data to ``_path``/``.get``, and every PQL variable gets a
compiler-chosen local name (``_b0``, ``_i1`` …); user text never becomes a Python
identifier. The generated function sees one namespace of fixed helpers
(``runtime.namespace``, shared by every rule) and no builtins.

Why it is fast: simple comparisons against literals are inlined (``p.get("age")`` plus a
type test and a native comparison), ``and``/``or`` of boolean-typed operands compile to
Python's own short-circuit operators, and the compiled function *is* ``evaluate`` (the
public keyword-only signature), so a call costs one Python frame. Rules that differ only
in their values share one code object (:func:`_function`): a decision that evaluates
hundreds of rules of a few shapes keeps their bytecode in the CPU's caches.
"""

from __future__ import annotations

import ast as py
import functools
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import ast as A
from . import messages as msg
from .functions import FUNCTIONS, METHODS, NEEDS_NOW, NEEDS_ROOT
from .runtime import namespace
from .semantics import NAMED_INPUTS
from .time import OccursTest

# Every node Python's compiler wants a position for gets line 1, column 0 as it is built
# (there is no Python source to point into): cheaper than a ``fix_missing_locations`` walk.
# Context and operator nodes carry no position and are shared, as CPython's parser does.
_AT: dict[str, Any] = {"lineno": 1, "col_offset": 0}
_LOAD, _STORE = py.Load(), py.Store()
_CMP_OPS = {"<": py.Lt(), "<=": py.LtE(), ">": py.Gt(), ">=": py.GtE()}
_ARITH = {"+": "_add", "-": "_sub", "*": "_mul", "/": "_div", "%": "_mod"}
_COMPARISONS = frozenset({"=", "!=", "<", "<=", ">", ">=", "in", "notIn", "like", "matches"})


_AND, _OR, _NOT, _IS, _IN, _EQ = py.And(), py.Or(), py.Not(), py.Is(), py.In(), py.Eq()


# Name nodes are shared, within a tree and across rules (a rule reads ``p``, ``_int``,
# ``_list`` … dozens of times): ``compile()`` only reads the tree, and nothing here changes
# a node once built. The names are the compiler's own (helpers, numbered temporaries),
# never user text, so the caches stay small.
@functools.lru_cache(maxsize=4096)
def _n(name: str) -> py.Name:
    return py.Name(id=name, ctx=_LOAD, **_AT)


@functools.lru_cache(maxsize=4096)
def _store(name: str) -> py.Name:
    return py.Name(id=name, ctx=_STORE, **_AT)


def _c(value: Any) -> py.Constant:
    return py.Constant(value=value, **_AT)


def _call(fn: str, *args: py.expr) -> py.Call:
    return py.Call(func=_n(fn), args=list(args), keywords=[], **_AT)


def _attr_call(obj: py.expr, attr: str, *args: py.expr) -> py.Call:
    return py.Call(
        func=py.Attribute(value=obj, attr=attr, ctx=_LOAD, **_AT),
        args=list(args),
        keywords=[],
        **_AT,
    )


def _params(names: list[str] | tuple[str, ...], defaults: list[py.expr]) -> py.arguments:
    return py.arguments(
        posonlyargs=[],
        args=[py.arg(arg=name, **_AT) for name in names],
        kwonlyargs=[],
        kw_defaults=[],
        defaults=defaults,
    )


def _lambda(params: list[str], body: py.expr) -> py.Lambda:
    return py.Lambda(args=_params(params, []), body=body, **_AT)


def _class_of(e: py.expr) -> py.Attribute:
    return py.Attribute(value=e, attr="__class__", ctx=_LOAD, **_AT)


def _compare(left: py.expr, op: py.cmpop, right: py.expr) -> py.Compare:
    return py.Compare(left=left, ops=[op], comparators=[right], **_AT)


def _is(a: py.expr, b: py.expr) -> py.Compare:
    return _compare(a, _IS, b)


def _and(*vals: py.expr) -> py.BoolOp:
    return py.BoolOp(op=_AND, values=list(vals), **_AT)


def _or(*vals: py.expr) -> py.BoolOp:
    return py.BoolOp(op=_OR, values=list(vals), **_AT)


def _if(test: py.expr, body: py.expr, orelse: py.expr) -> py.IfExp:
    return py.IfExp(test=test, body=body, orelse=orelse, **_AT)


def _list(elts: list[py.expr]) -> py.List:
    return py.List(elts=elts, ctx=_LOAD, **_AT)


@dataclass(frozen=True)
class _Scope:
    implicit: tuple[str, ...] = ("p",)
    names: dict[str, str] = field(default_factory=dict)

    def bind(self, pairs: dict[str, str]) -> _Scope:
        return _Scope(self.implicit, {**self.names, **pairs})

    def push(self, item: str) -> _Scope:
        return _Scope((*self.implicit, item), self.names)


def is_boolean(node: A.Node) -> bool:
    """True when ``node`` always evaluates to a Python bool (no coercion needed)."""
    if isinstance(node, A.Literal):
        return node.value is True or node.value is False
    if isinstance(node, A.Binary):
        return node.op in _COMPARISONS
    if isinstance(node, A.Unary):
        return node.op == "not"
    if isinstance(node, A.BoolOp | A.Occurs | A.Chain):
        return True
    if isinstance(node, A.Select):
        return node.kind != "select"
    if isinstance(node, A.Method):
        sig = METHODS.get(node.name)
        return sig is not None and sig.boolean
    if isinstance(node, A.Call):
        if node.name == "if" and len(node.args) == 3:
            return is_boolean(node.args[1]) and is_boolean(node.args[2])
        sig = FUNCTIONS.get(node.name)
        return sig is not None and sig.boolean
    return False


class _Gen:
    """One code generation pass (``vars_mode`` resolves root names through ``variables``)."""

    def __init__(self, shared: _Shared, vars_mode: bool) -> None:
        self.s = shared
        self.vars_mode = vars_mode
        self.walrus_ok = True
        # Python refuses an assignment expression anywhere in a comprehension's iterable,
        # nested lambdas included: while one is compiled, no lambda may use a temp either.
        self.in_iterable = 0

    # ---- entry --------------------------------------------------------------------------

    def top(self, tree: A.Node) -> tuple[A.Node, py.expr]:
        scope = _Scope()
        if isinstance(tree, A.Lambda):  # the lambda header names the profile
            scope = scope.bind({p: "p" for p in tree.params})
            tree = tree.body
        return tree, self.expr(tree, scope)

    def boolean(self, node: A.Node, sc: _Scope) -> py.expr:
        code = self.expr(node, sc)
        return code if is_boolean(node) else _call("_truthy", code)

    def expr(self, node: A.Node, sc: _Scope) -> py.expr:
        method: Callable[[A.Node, _Scope], py.expr] = getattr(self, "_" + type(node).__name__)
        return method(node, sc)

    # ---- leaves -------------------------------------------------------------------------

    def _Literal(self, node: A.Literal, sc: _Scope) -> py.expr:
        return self.s.value(node.value)

    def _ListLit(self, node: A.ListLit, sc: _Scope) -> py.expr:
        return _list([self.expr(x, sc) for x in node.items])

    def _ObjectLit(self, node: A.ObjectLit, sc: _Scope) -> py.expr:
        return py.Dict(
            keys=[_c(k) for k, _ in node.entries],
            values=[self.expr(v, sc) for _, v in node.entries],
            **_AT,
        )

    def _This(self, node: A.This, sc: _Scope) -> py.expr:
        return _n(sc.implicit[-1])

    def _Param(self, node: A.Param, sc: _Scope) -> py.expr:
        if node.index != 1:
            raise msg.fail(msg.UNKNOWN_PARAM.format(index=node.index), node.span, self.s.source)
        return _n("p")

    def _Up(self, node: A.Up, sc: _Scope) -> py.expr:
        if node.levels >= len(sc.implicit):
            raise msg.fail(
                msg.UP_TOO_FAR.format(carets="^" * node.levels), node.span, self.s.source
            )
        return _n(sc.implicit[-1 - node.levels])

    def _Context(self, node: A.Context, sc: _Scope) -> py.expr:
        self.s.uses.add("c")
        if not self.vars_mode:
            self.s.context_paths.setdefault(node.schema, None)
        return _attr_call(_n("c"), "get", _c(node.schema))

    def _Name(self, node: A.Name, sc: _Scope, chain: tuple[str, ...] = ()) -> py.expr:
        name = node.name
        if name in sc.names:
            base: py.expr = _n(sc.names[name])
            if sc.names[name] == "p":
                self._record_profile(chain)
        elif name == "xEvent":
            self.s.uses.add("x")
            base = _n("x")
        elif name == "profile":
            self._record_profile(chain)
            base = _n("p")
        else:
            self.s.root_names = True
            item = sc.implicit[-1]
            if item == "p":
                self._record_profile((name, *chain))
            lookup: py.expr = (
                _attr_call(_n("p"), "get", _c(name))
                if item == "p"
                else _call("_get", _n(item), _c(name))
            )
            if self.vars_mode:
                lookup = _if(
                    _compare(_c(name), _IN, _n("v")),
                    py.Subscript(value=_n("v"), slice=_c(name), ctx=_LOAD, **_AT),
                    lookup,
                )
            base = lookup
        return _call("_path", base, _c(chain)) if chain else base

    def _record_profile(self, chain: tuple[str, ...]) -> None:
        if chain and not self.vars_mode and chain[0] not in NAMED_INPUTS:
            self.s.profile_paths.setdefault(".".join(chain), None)

    def _Field(self, node: A.Field, sc: _Scope) -> py.expr:
        names: list[str] = []
        base: A.Node = node
        while isinstance(base, A.Field):
            names.append(base.name)
            base = base.obj
        chain = tuple(reversed(names))
        if isinstance(base, A.Name):
            return self._Name(base, sc, chain)
        if isinstance(base, A.Param) and base.index == 1:
            self._record_profile(chain)
        if isinstance(base, A.Context) and not self.vars_mode:
            self.s.context_paths.pop(base.schema, None)
            self.s.context_paths.setdefault(base.schema + "." + ".".join(chain), None)
            self.s.uses.add("c")
            return _call("_path", _attr_call(_n("c"), "get", _c(base.schema)), _c(chain))
        return _call("_path", self.expr(base, sc), _c(chain))

    # ---- calls --------------------------------------------------------------------------

    def _item_fn(self, arg: A.Node, sc: _Scope) -> py.expr:
        if isinstance(arg, A.Lambda):
            return self._Lambda(arg, sc)
        item = self.s.fresh("_i")
        saved, self.walrus_ok = self.walrus_ok, not self.in_iterable
        try:
            return _lambda([item], self.expr(arg, sc.push(item)))
        finally:
            self.walrus_ok = saved

    def _Method(self, node: A.Method, sc: _Scope) -> py.expr:
        sig = METHODS[node.name]
        args = [
            self._item_fn(a, sc) if kind == "i" else self.expr(a, sc)
            for a, kind in zip(node.args, sig.args, strict=False)
        ]
        return _call("m_" + node.name, self.expr(node.obj, sc), *args)

    def _Call(self, node: A.Call, sc: _Scope) -> py.expr:
        if node.name == "if":
            cond, yes, no = node.args
            return _if(self.boolean(cond, sc), self.expr(yes, sc), self.expr(no, sc))
        args = [self.expr(a, sc) for a in node.args]
        if node.name in NEEDS_NOW:
            self.s.uses.add("n")
            args.insert(0, _n("n"))
        if node.name in NEEDS_ROOT:
            self._record_profile(("segmentMembership",))
            args.insert(0, _n("p"))
        return _call("f_" + node.name, *args)

    def _Filter(self, node: A.Filter, sc: _Scope) -> py.expr:
        return _call("_filter", self.expr(node.obj, sc), self._item_fn(node.cond, sc))

    def _Lambda(self, node: A.Lambda, sc: _Scope) -> py.expr:
        names = {p: self.s.fresh("_a") for p in node.params}
        saved, self.walrus_ok = self.walrus_ok, not self.in_iterable
        try:
            body = self.expr(node.body, sc.bind(names))
        finally:
            self.walrus_ok = saved
        return _lambda(list(names.values()), body)

    # ---- operators ----------------------------------------------------------------------

    def _Unary(self, node: A.Unary, sc: _Scope) -> py.expr:
        if node.op == "not":
            return py.UnaryOp(op=_NOT, operand=self.boolean(node.operand, sc), **_AT)
        return _call("_neg", self.expr(node.operand, sc))

    def _BoolOp(self, node: A.BoolOp, sc: _Scope) -> py.expr:
        op = _AND if node.op == "and" else _OR
        return py.BoolOp(op=op, values=[self.boolean(x, sc) for x in node.operands], **_AT)

    def _Binary(self, node: A.Binary, sc: _Scope) -> py.expr:
        op = node.op
        if op in _ARITH:
            return _call(_ARITH[op], self.expr(node.left, sc), self.expr(node.right, sc))
        fast = self._fast_comparison(node, sc)
        if fast is not None:
            return fast
        left, right = self.expr(node.left, sc), self.expr(node.right, sc)
        if op == "=":
            return _call("_eq", left, right)
        if op == "!=":
            return _call("_ne", left, right)
        if op in _CMP_OPS:
            return _call("_cmp", _c(op), left, right)
        if op == "in":
            return _call("_in", left, right)
        if op == "notIn":
            return _call("_notin", left, right)
        if op == "like":
            return _call("_like", left, right)
        return _call("_matches", left, right)

    def _fast_comparison(self, node: A.Binary, sc: _Scope) -> py.expr | None:
        """Inline ``path OP literal`` (the common rule shape) with a temp variable."""
        if not self.walrus_ok:
            return None
        right = node.right
        op = node.op
        if (
            op == "in"
            and isinstance(right, A.ListLit)
            and right.items
            and all(isinstance(x, A.Literal) and x.value.__class__ is str for x in right.items)
        ):
            strings = frozenset(x.value for x in right.items if isinstance(x, A.Literal))
            known = self.s.const(strings)
            temp = self.s.fresh("_t")
            return _if(
                _is(_class_of(self._walrus(temp, node.left, sc)), _n("_str")),
                _compare(_n(temp), _IN, known),
                _call("_instr", _n(temp), known),
            )
        if not isinstance(right, A.Literal) or right.value is None:
            return None
        value = right.value
        temp = self.s.fresh("_t")
        cls = self.s.fresh("_c")

        literal = self.s.value(value)

        def slow_list(first: py.expr) -> py.expr:
            args = [_n(temp), literal] if op == "=" else [_c(op), _n(temp), literal]
            return _and(_is(first, _n("_list")), _call("_eq" if op == "=" else "_cmp", *args))

        if op == "=" and value.__class__ is str:
            first = _compare(self._walrus(temp, node.left, sc), _EQ, literal)
            return _or(first, slow_list(_class_of(_n(temp))))
        if op == "=" and value.__class__ is bool:
            return _or(
                _is(self._walrus(temp, node.left, sc), _c(value)), slow_list(_class_of(_n(temp)))
            )
        if value.__class__ in (int, float) and (op == "=" or op in _CMP_OPS):
            # ((_c := (_t := x).__class__) is int or _c is float) and _t OP k or <list case>
            cmp_op = _EQ if op == "=" else _CMP_OPS[op]
            cls_of = py.NamedExpr(
                target=_store(cls), value=_class_of(self._walrus(temp, node.left, sc)), **_AT
            )
            typed = _or(_is(cls_of, _n("_int")), _is(_n(cls), _n("_float")))
            return _or(
                _and(typed, _compare(_n(temp), cmp_op, literal)),
                slow_list(_n(cls)),
            )
        return None

    def _walrus(self, temp: str, node: A.Node, sc: _Scope) -> py.expr:
        return py.NamedExpr(target=_store(temp), value=self.expr(node, sc), **_AT)

    # ---- time ---------------------------------------------------------------------------

    def _time_ref(self, node: A.Node, sc: _Scope) -> py.expr:
        # ``now``-relative intervals depend on nothing else: computed once per call.
        if isinstance(node, A.RelTime):
            return self.s.hoist(("_rel", node.word), _call("_rel", _n("n"), _c(node.word)))
        if isinstance(node, A.Period):
            return self.s.hoist(
                ("_period", node.which, node.unit),
                _call("_period", _n("n"), _c(node.which), _c(node.unit)),
            )
        return _call("_ival", self.expr(node, sc))

    def _spec(self, spec: A.OccursSpec, sc: _Scope) -> tuple[py.expr, py.expr, py.expr]:
        test = OccursTest(spec.form, spec.op, spec.amount or 0, spec.unit or "day", spec.direction)
        first = self._time_ref(spec.times[0], sc)
        second = self._time_ref(spec.times[1], sc) if len(spec.times) > 1 else _c(None)
        return self.s.const(test), first, second

    def _Occurs(self, node: A.Occurs, sc: _Scope) -> py.expr:
        test, first, second = self._spec(node.spec, sc)
        return _attr_call(test, "holds", self.expr(node.subject, sc), first, second)

    def _Chain(self, node: A.Chain, sc: _Scope) -> py.expr:
        steps: list[py.expr] = []
        for step in node.steps:
            what = self._item_fn(A.Call("if", (step.what, A.Literal(True), A.Literal(False))), sc)
            if step.when is not None:
                test, first, second = self._spec(step.when, sc)
            else:
                test, first, second = _c(None), _c(None), _c(None)
            where = self._item_fn(step.where, sc) if step.where is not None else _c(None)
            steps.append(
                py.Tuple(elts=[what, test, first, second, _c(step.count), where], ctx=_LOAD, **_AT)
            )
        return _call(
            "_chain",
            self.expr(node.events, sc),
            _c(node.ts_field),
            _list(steps),
        )

    # ---- binders ------------------------------------------------------------------------

    def _generators(
        self, bindings: tuple[A.Binding, ...], sc: _Scope
    ) -> tuple[list[py.comprehension], _Scope, list[str]]:
        gens: list[py.comprehension] = []
        names: list[str] = []
        for b in bindings:
            saved, self.walrus_ok = self.walrus_ok, False
            self.in_iterable += 1
            try:
                rng = _call("_iter", self.expr(b.range, sc))
            finally:
                self.walrus_ok = saved
                self.in_iterable -= 1
            local = self.s.fresh("_b")
            sc = sc.bind({b.var: local})
            names.append(local)
            ifs = [self.boolean(b.cond, sc)] if b.cond is not None else []
            gens.append(py.comprehension(target=_store(local), iter=rng, ifs=ifs, is_async=0))
        return gens, sc, names

    def _Select(self, node: A.Select, sc: _Scope) -> py.expr:
        if node.kind == "forall":
            first, rest = node.bindings[0], node.bindings[1:]
            if not rest:
                gens, inner, names = self._generators(
                    (A.Binding(first.var, first.range, None),), sc
                )
                cond = (
                    self.boolean(first.cond, inner)
                    if first.cond is not None
                    else _call("_truthy", _n(names[0]))
                )
                return _call("_all", py.GeneratorExp(elt=cond, generators=gens, **_AT))
            gens, inner, _ = self._generators((first,), sc)
            rest_gens, _, _ = self._generators(rest, inner)
            exists = _call("_any", py.GeneratorExp(elt=_c(True), generators=rest_gens, **_AT))
            return _call("_all", py.GeneratorExp(elt=exists, generators=gens, **_AT))
        gens, inner, names = self._generators(node.bindings, sc)
        if node.kind == "exists":
            return _call("_any", py.GeneratorExp(elt=_c(True), generators=gens, **_AT))
        elt: py.expr = _n(names[0]) if len(names) == 1 else _list([_n(x) for x in names])
        return py.ListComp(elt=elt, generators=gens, **_AT)

    def _Aggregate(self, node: A.Aggregate, sc: _Scope) -> py.expr:
        gens, inner, names = self._generators(node.bindings, sc)
        elt = self.expr(node.value, inner) if node.value is not None else _n(names[0])
        return _call("_agg_" + node.fn, py.ListComp(elt=elt, generators=gens, **_AT))

    def _Let(self, node: A.Let, sc: _Scope) -> py.expr:
        local = self.s.fresh("_l")
        value = self.expr(node.value, sc)
        saved, self.walrus_ok = self.walrus_ok, True
        try:
            body = self.expr(node.body, sc.bind({node.var: local}))
        finally:
            self.walrus_ok = saved
        return py.Call(func=_lambda([local], body), args=[value], keywords=[], **_AT)


class _Shared:
    """State common to both passes: constants, fresh names, inputs used, paths read."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        #: The rule's own values, read by its code as the free variables ``_k0``, ``_k1``
        #: … (see :func:`_function`); ``_k0`` holds the ``variables`` variant (``None``
        #: when there is none).
        self.consts: list[Any] = [None]
        self.counter = 0
        self.uses: set[str] = set()
        self.root_names = False
        self.profile_paths: dict[str, None] = {}
        self.context_paths: dict[str, None] = {}
        self.hoisted: dict[tuple[str, ...], tuple[str, py.expr]] = {}

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def hoist(self, key: tuple[str, ...], value: py.expr) -> py.Name:
        """A local computed from ``now`` in the prelude (once per call), shared by uses."""
        self.uses.add("n")
        if key not in self.hoisted:
            self.hoisted[key] = (self.fresh("_h"), value)
        return _n(self.hoisted[key][0])

    def const(self, value: Any) -> py.Name:
        """A value of this rule, read from its closure: rules that differ only in such
        values generate the same code."""
        self.consts.append(value)
        return _n(f"_k{len(self.consts) - 1}")

    def value(self, value: Any) -> py.expr:
        """A literal of the rule: a string or a number from the closure (``const``);
        ``true``, ``false`` and ``null`` inline (the code tests them with ``is``)."""
        if value is None or value is True or value is False:
            return _c(value)
        return self.const(value)


@dataclass(frozen=True)
class Compiled:
    function: Callable[..., Any]
    profile_paths: tuple[str, ...]
    context_paths: tuple[str, ...]


@functools.cache
def _base_namespace(now_resolver: Callable[[Any], Any]) -> dict[str, Any]:
    """The fixed helpers, built once per resolver and shared by every rule (never written
    to: a rule's own values are in its closure)."""
    ns = namespace(now_resolver)
    ns.update(_str=str, _list=list, _int=int, _float=float, _dict=dict, _Exception=Exception)
    return ns


_LAZY = threading.Lock()  # one variables variant generated at a time (fresh names, consts)


class _Rule:
    """One tree's code generation. The plain function (``variables`` not given) is built
    now; when the rule reads root names, the variant that resolves them through
    ``variables`` first is generated and compiled the first time a call passes variables
    (most rules are never given any), and the plain function hands such calls to it."""

    def __init__(
        self, tree: A.Node, shape: str, source: str | None, now_resolver: Callable[[Any], Any]
    ) -> None:
        self.tree = tree
        self.shape = shape
        self.ns = _base_namespace(now_resolver)
        self.shared = _Shared(source)
        self.body = tree
        self.lazy = False
        #: ``_k0``: the callable that calls with variables go to (this stand-in, then
        #: the variant it compiled).
        self.variant: list[Callable[..., Any]] = [self._variables_variant]

    def plain(self) -> py.FunctionDef:
        """The function for calls without variables (raises the tree's PQLError)."""
        self.body, code = _Gen(self.shared, vars_mode=False).top(self.tree)
        self.lazy = self.shared.root_names
        if self.lazy:
            self.shared.consts[0] = self.variant
        return self._function_def(code, variables=False)

    def _variables_variant(self, *args: Any) -> Any:
        """Stands in for the variables variant until the first call that passes variables."""
        with _LAZY:
            if self.variant[0] == self._variables_variant:
                with_vars = _Gen(self.shared, vars_mode=True).top(self.tree)[1]
                definition = self._function_def(with_vars, variables=True)
                self.variant[0] = _function(definition, self.shared, self.ns)
        return self.variant[0](*args)

    def _shaped(self, code: py.expr) -> py.expr:
        shape = self.shape
        if shape == "rule":
            return code if is_boolean(self.body) else _call("_truthy", code)
        if shape == "formula":
            return _call("_number", code)
        return code if is_boolean(self.body) else _call("_shape", code)

    def _function_def(self, code: py.expr, *, variables: bool) -> py.FunctionDef:
        """``def evaluate(profile, events, now, context, variables)`` returning ``code``."""
        shared = self.shared
        prelude: list[py.stmt] = []
        if self.lazy and not variables:
            passed: list[py.expr] = [_n(name) for name in _PARAMETERS]
            holder = py.Subscript(value=_n("_k0"), slice=_c(0), ctx=_LOAD, **_AT)
            call = py.Call(func=holder, args=passed, keywords=[], **_AT)
            prelude.append(py.If(test=_n("variables"), body=[_return(call)], orelse=[], **_AT))
        profile = _n("profile")
        prelude.append(
            _assign(
                "p", _if(_is(_class_of(profile), _n("_dict")), profile, _call("_root", profile))
            )
        )
        if "x" in shared.uses:
            prelude.append(_assign("x", _call("_events", _n("events"))))
        if "n" in shared.uses:
            prelude.append(_assign("n", _call("_now", _n("now"))))
            prelude.extend(_assign(name, value) for name, value in shared.hoisted.values())
        if "c" in shared.uses:
            prelude.append(_assign("c", _call("_ctx", _n("context"))))
        body: list[py.stmt] = []
        if variables:
            body.append(_assign("v", _call("_vars", _n("variables"))))
        body.append(_return(self._shaped(code)))
        guarded = py.Try(
            body=body,
            handlers=[
                py.ExceptHandler(type=_n("_PQLError"), name=None, body=[py.Raise(**_AT)], **_AT),
                py.ExceptHandler(
                    type=_n("_Exception"),
                    name="_e",
                    body=[py.Raise(exc=_call("_internal", _n("_e")), cause=_c(None), **_AT)],
                    **_AT,
                ),
            ],
            orelse=[],
            finalbody=[],
            **_AT,
        )
        return py.FunctionDef(
            name="evaluate",
            # Ordinary (not keyword-only) parameters: CPython fills missing keyword-only
            # arguments from a dict, which costs ~100 ns a call; the documented contract is
            # still keyword-only (``CompiledRule.evaluate``).
            args=_params(_PARAMETERS, [_c(None)] * 4),
            body=[*prelude, guarded],
            decorator_list=[],
            returns=None,
            **_AT,
        )


_PARAMETERS = ("profile", "events", "now", "context", "variables")


def _assign(name: str, value: py.expr) -> py.Assign:
    return py.Assign(targets=[_store(name)], value=value, **_AT)


def _return(value: py.expr) -> py.Return:
    return py.Return(value=value, **_AT)


#: Code objects by themselves (code objects compare by their bytecode, constants and
#: names): rules of one shape (the same tests of the same paths, other values) share one,
#: so a decision that evaluates many of them runs bytecode that is already in the CPU's
#: caches. Bounded; cleared when full.
_CODES: dict[types.CodeType, types.CodeType] = {}
_CODES_MAX = 4096


def _function(
    definition: py.FunctionDef, shared: _Shared, ns: dict[str, Any]
) -> Callable[..., Any]:
    """The function ``definition`` describes, the rule's values (``shared.consts``) in
    its closure."""
    consts = shared.consts
    factory = py.FunctionDef(
        name="_factory",
        args=_params([f"_k{i}" for i in range(len(consts))], []),
        body=[definition, _return(_n("evaluate"))],
        decorator_list=[],
        returns=None,
        **_AT,
    )
    module = compile(py.Module(body=[factory], type_ignores=[]), "<pql>", "exec")
    outer = next(c for c in module.co_consts if isinstance(c, types.CodeType))
    code = next(c for c in outer.co_consts if isinstance(c, types.CodeType))
    shared_code = _CODES.get(code)
    if shared_code is None:
        if len(_CODES) >= _CODES_MAX:
            _CODES.clear()
        shared_code = _CODES[code] = code
    closure = tuple(types.CellType(consts[int(name[2:])]) for name in shared_code.co_freevars)
    return types.FunctionType(
        shared_code, ns, "evaluate", (None, None, None, None), closure or None
    )


def compile_tree(
    tree: A.Node, *, shape: str, source: str | None, now_resolver: Callable[[Any], Any]
) -> Compiled:
    """Build the ``evaluate(*, profile, events, now, context, variables)`` function.

    ``shape`` is ``"rule"`` (a bool), ``"formula"`` (a number or None) or ``"value"``.
    """
    rule = _Rule(tree, shape, source, now_resolver)
    function = _function(rule.plain(), rule.shared, rule.ns)
    shared = rule.shared
    return Compiled(function, tuple(shared.profile_paths), tuple(shared.context_paths))
