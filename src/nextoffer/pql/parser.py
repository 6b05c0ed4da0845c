"""Tokens → AST: a hand-written recursive-descent parser for ``pql/text`` (grammar in
``docs/pql.md``). Keywords match case-insensitively; after a ``.`` every word is a name.
"""

from __future__ import annotations

from . import ast as A
from . import messages as msg
from .ast import Span
from .lexer import Token, tokenize
from .semantics import MAX_PARSE_DEPTH, MAX_TREE_HEIGHT

COMPARISON_OPS = frozenset({"=", "!=", "<", "<=", ">", ">="})
WORD_OPS = {"in": "in", "notin": "notIn", "like": "like", "matches": "matches"}
# Words that can never be a bare name in primary position.
RESERVED = frozenset(
    {
        "and",
        "or",
        "not",
        "in",
        "notin",
        "like",
        "matches",
        "occurs",
        "between",
        "select",
        "exists",
        "forall",
        "let",
        "over",
        "from",
        "where",
    }
)
REL_TIMES = frozenset({"now", "today", "yesterday", "tomorrow"})
PERIOD_WORDS = frozenset({"this", "last", "next"})
DIRECTIONS = frozenset({"before", "after", "from"})
AGGREGATES = frozenset({"sum", "average", "min", "max"})
TIME_UNITS = {
    "millisecond": "millisecond",
    "milliseconds": "millisecond",
    "second": "second",
    "seconds": "second",
    "minute": "minute",
    "minutes": "minute",
    "hour": "hour",
    "hours": "hour",
    "day": "day",
    "days": "day",
    "week": "week",
    "weeks": "week",
    "month": "month",
    "months": "month",
    "year": "year",
    "years": "year",
    "decade": "decade",
    "decades": "decade",
    "century": "century",
    "centuries": "century",
    "millennium": "millennium",
    "millennia": "millennium",
}


def parse(source: str) -> A.Node:
    """Parse PQL text; raises PQLError with the position of the first problem."""
    return parse_tokens(source, tokenize(source))


def parse_tokens(source: str, tokens: list[Token]) -> A.Node:
    """Parse the tokens of ``source`` (``tokenize(source)``, when the caller needs them too)."""
    tree = _Parser(source, tokens).query()
    check_height(tree, source)
    return tree


def check_height(tree: A.Node, source: str | None) -> None:
    """Reject trees taller than MAX_TREE_HEIGHT (computed without recursion)."""
    stack: list[tuple[A.Node, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_TREE_HEIGHT:
            raise msg.fail(msg.TOO_DEEP.format(limit=MAX_TREE_HEIGHT), node.span, source)
        stack.extend((child, depth + 1) for child in A.children(node))


def _join(a: Span, b: Span) -> Span:
    return Span(a.line, a.column, a.offset, b.end)


class _Parser:
    def __init__(self, source: str, tokens: list[Token]) -> None:
        self.source = source
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        #: The current token, ``tokens[pos]`` (kept by :meth:`advance`, the one place
        #: ``pos`` moves).
        self.tok = tokens[0]

    # ---- token helpers ------------------------------------------------------------------

    def peek(self, k: int = 1) -> Token:
        return self.tokens[min(self.pos + k, len(self.tokens) - 1)]

    def advance(self) -> Token:
        t = self.tok
        if t.kind != "eof":
            self.pos += 1
            self.tok = self.tokens[self.pos]
        return t

    def is_op(self, value: str, t: Token | None = None) -> bool:
        t = t or self.tok
        return t.kind == "op" and t.value == value

    def is_word(self, word: str, t: Token | None = None) -> bool:
        t = t or self.tok
        return t.kind == "ident" and str(t.value).lower() == word

    def word(self, t: Token | None = None) -> str:
        t = t or self.tok
        return str(t.value).lower() if t.kind == "ident" else ""

    def error(self, expected: str, t: Token | None = None) -> Exception:
        t = t or self.tok
        if t.kind == "eof":
            return msg.fail(msg.UNEXPECTED_END.format(expected=expected), t.span, self.source)
        return msg.fail(
            msg.EXPECTED.format(expected=expected, found=t.describe()), t.span, self.source
        )

    def expect_op(self, value: str) -> Token:
        if not self.is_op(value):
            raise self.error(f"'{value}'")
        return self.advance()

    def expect_word(self, word: str) -> Token:
        if not self.is_word(word):
            raise self.error(f"'{word}'")
        return self.advance()

    def ident(self, what: str = "a name") -> Token:
        if self.tok.kind != "ident":
            raise self.error(what)
        return self.advance()

    def variable(self, what: str = "a variable name") -> str:
        if self.tok.kind != "ident" or self.word() in RESERVED:
            raise self.error(what)
        return str(self.advance().value)

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_PARSE_DEPTH:
            raise msg.fail(msg.TOO_DEEP.format(limit=MAX_PARSE_DEPTH), self.tok.span, self.source)

    def here(self, start: Span) -> Span:
        prev = self.tokens[self.pos - 1] if self.pos else self.tok
        return _join(start, prev.span)

    # ---- top level ----------------------------------------------------------------------

    def query(self) -> A.Node:
        node = self.expression()
        if self.tok.kind != "eof":
            raise msg.fail(
                msg.TRAILING.format(found=self.tok.describe()), self.tok.span, self.source
            )
        return node

    def expression(self) -> A.Node:
        self.enter()
        try:
            prefix = self.prefix_form()
            return prefix if prefix is not None else self.or_expr()
        finally:
            self.depth -= 1

    def prefix_form(self) -> A.Node | None:
        t = self.tok
        w = self.word()
        nxt = self.peek()
        if w in ("select", "exists", "forall") and nxt.kind == "ident":
            self.advance()
            return A.Select(w, self.bindings(), span=self.here(t.span))
        if w == "let" and nxt.kind == "ident" and self.is_op("=", self.peek(2)):
            self.advance()
            var = self.variable()
            self.expect_op("=")
            value = self.additive()
            self.expect_word("in")
            body = self.expression()
            return A.Let(var, value, body, span=self.here(t.span))
        if w in AGGREGATES and self._starts_operand(nxt):
            self.advance()
            value = self.additive()
            if self.is_word("over"):
                self.advance()
                return A.Aggregate(w, value, self.bindings(), span=self.here(t.span))
            if self.is_word("from") and isinstance(value, A.Name):
                self.advance()
                rng = self.postfix()
                cond = self.where_clause()
                binding = A.Binding(value.name, rng, cond, span=self.here(value.span))
                return A.Aggregate(w, None, (binding,), span=self.here(t.span))
            raise self.error("'over' or 'from'")
        if self.is_op("(") and self._lambda_ahead():
            return self.lambda_()
        return None

    def _starts_operand(self, t: Token) -> bool:
        if t.kind == "ident":
            return t.value.lower() not in RESERVED
        # ``sum(`` is not a function, so a parenthesis after an aggregate word opens its value
        return t.kind in ("param", "ctx", "num", "str") or (
            t.kind == "op" and t.value in ("^", "(")
        )

    def _lambda_ahead(self) -> bool:
        k = 1
        if self.is_op(")", self.peek(k)):
            return self.is_op("=>", self.peek(k + 1))
        while True:
            if self.peek(k).kind != "ident":
                return False
            k += 1
            if self.is_op(")", self.peek(k)):
                return self.is_op("=>", self.peek(k + 1))
            if not self.is_op(",", self.peek(k)):
                return False
            k += 1

    def lambda_(self) -> A.Node:
        start = self.expect_op("(").span
        params: list[str] = []
        while not self.is_op(")"):
            params.append(self.variable("a parameter name"))
            if self.is_op(","):
                self.advance()
        self.expect_op(")")
        self.expect_op("=>")
        body = self.expression()
        return A.Lambda(tuple(params), body, span=self.here(start))

    def bindings(self) -> tuple[A.Binding, ...]:
        out = [self.binding()]
        while (
            self.is_op(",") and self.peek().kind == "ident" and self.is_word("from", self.peek(2))
        ):
            self.advance()
            out.append(self.binding())
        return tuple(out)

    def binding(self) -> A.Binding:
        t = self.tok
        var = self.variable()
        self.expect_word("from")
        rng = self.postfix()
        colon = self.is_op(":")
        cond = self.where_clause()
        return A.Binding(var, rng, cond, colon, span=self.here(t.span))

    def where_clause(self) -> A.Node | None:
        if self.is_word("where") or self.is_op(":"):
            self.advance()
            return self.or_expr()
        return None

    # ---- boolean ------------------------------------------------------------------------

    def or_expr(self) -> A.Node:
        first = self.and_expr()
        operands = [first]
        while self.is_word("or"):
            self.advance()
            operands.append(self.and_expr())
        if len(operands) == 1:
            return first
        return A.BoolOp("or", tuple(operands), span=self.here(first.span))

    def and_expr(self) -> A.Node:
        first = self.not_expr()
        operands = [first]
        while self.is_word("and"):
            self.advance()
            operands.append(self.not_expr())
        if len(operands) == 1:
            return first
        return A.BoolOp("and", tuple(operands), span=self.here(first.span))

    def not_expr(self) -> A.Node:
        t = self.tok
        if self.is_word("not") or self.is_op("!"):
            self.advance()
            self.enter()
            try:
                operand = self.not_expr()
            finally:
                self.depth -= 1
            return A.Unary("not", operand, span=self.here(t.span))
        prefix = self.prefix_form()
        if prefix is not None:
            return prefix
        return self.comparison()

    def comparison(self) -> A.Node:
        left = self.additive()
        node = self.comparison_tail(left)
        if node is not left and (self._comparison_op() or self.is_word("occurs")):
            raise msg.fail(msg.CHAINED_COMPARISON, self.tok.span, self.source)
        return node

    def _comparison_op(self) -> str | None:
        t = self.tok
        if t.kind == "op" and t.value in COMPARISON_OPS:
            return str(t.value)
        w = self.word()
        return WORD_OPS.get(w)

    def comparison_tail(self, left: A.Node) -> A.Node:
        op = self._comparison_op()
        if op is not None:
            self.advance()
            right = self.additive()
            return A.Binary(op, left, right, span=self.here(left.span))
        if self.is_word("occurs"):
            self.advance()
            spec = self.occurs_spec()
            return A.Occurs(left, spec, span=self.here(left.span))
        return left

    # ---- time ---------------------------------------------------------------------------

    def occurs_spec(self) -> A.OccursSpec:
        t = self.tok
        w = self.word()
        if w == "between":
            self.advance()
            first = self.time_ref()
            self.expect_word("and")
            second = self.time_ref()
            return A.OccursSpec("between", (first, second), span=self.here(t.span))
        if t.kind == "op" and t.value in COMPARISON_OPS:
            op = str(self.advance().value)
            num = self.tok
            if num.kind != "num" or not isinstance(num.value, int):
                raise self.error("a whole number")
            self.advance()
            unit = self.time_unit()
            direction = self.word()
            if direction not in DIRECTIONS:
                raise self.error("'before', 'after' or 'from'")
            self.advance()
            when = self.time_ref()
            return A.OccursSpec(
                "distance",
                (when,),
                op=op,
                amount=int(num.value),
                unit=unit,
                direction=direction,
                span=self.here(t.span),
            )
        if w in DIRECTIONS:
            self.advance()
            when = self.time_ref()
            return A.OccursSpec(w, (when,), span=self.here(t.span))
        if w == "on":
            self.advance()
        when = self.time_ref()
        return A.OccursSpec("on", (when,), span=self.here(t.span))

    def time_unit(self) -> str:
        unit = TIME_UNITS.get(self.word())
        if unit is None:
            raise msg.fail(
                msg.BAD_TIME_UNIT.format(found=self.tok.describe()), self.tok.span, self.source
            )
        self.advance()
        return unit

    def time_ref(self) -> A.Node:
        t = self.tok
        w = self.word()
        if w in REL_TIMES:
            self.advance()
            return A.RelTime(w, span=t.span)
        if w in PERIOD_WORDS and self.word(self.peek()) in TIME_UNITS:
            self.advance()
            unit = self.time_unit()
            return A.Period(w, unit, span=self.here(t.span))
        return self.additive()

    # ---- arithmetic ---------------------------------------------------------------------

    def additive(self) -> A.Node:
        node = self.multiplicative()
        while self.tok.kind == "op" and self.tok.value in ("+", "-"):
            op = str(self.advance().value)
            right = self.multiplicative()
            node = A.Binary(op, node, right, span=self.here(node.span))
        return node

    def multiplicative(self) -> A.Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.value in ("*", "/", "%"):
            op = str(self.advance().value)
            right = self.unary()
            node = A.Binary(op, node, right, span=self.here(node.span))
        return node

    def unary(self) -> A.Node:
        t = self.tok
        if self.is_op("-"):
            self.advance()
            self.enter()
            try:
                operand = self.unary()
            finally:
                self.depth -= 1
            span = self.here(t.span)
            value = operand.value if isinstance(operand, A.Literal) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                return A.Literal(-value, span=span)
            return A.Unary("-", operand, span=span)
        return self.postfix()

    # ---- postfix and primaries ----------------------------------------------------------

    def postfix(self) -> A.Node:
        node = self.primary()
        while True:
            if self.is_op("."):
                self.advance()
                name_tok = self.ident("a field or function name")
                name = str(name_tok.value)
                if self.is_op("("):
                    args = self.arguments()
                    node = A.Method(
                        node, name, args, span=self.here(node.span), name_span=name_tok.span
                    )
                else:
                    node = A.Field(node, name, span=self.here(node.span))
            elif self.is_op("["):
                self.advance()
                cond = self.expression()
                self.expect_op("]")
                node = A.Filter(node, cond, span=self.here(node.span))
            else:
                return node

    def arguments(self) -> tuple[A.Node, ...]:
        self.expect_op("(")
        args: list[A.Node] = []
        if not self.is_op(")"):
            args.append(self.expression())
            while self.is_op(","):
                self.advance()
                args.append(self.expression())
        self.expect_op(")")
        return tuple(args)

    def primary(self) -> A.Node:
        t = self.tok
        if t.kind in ("num", "str"):
            self.advance()
            return A.Literal(t.value, span=t.span)
        if t.kind == "param":
            self.advance()
            return A.Param(int(t.value), span=t.span)
        if t.kind == "ctx":
            self.advance()
            schema, event_form = t.value
            return A.Context(schema, event_form, span=t.span)
        if t.kind == "ident":
            return self.name_or_call()
        if self.is_op("^"):
            levels = 0
            while self.is_op("^"):
                self.advance()
                levels += 1
            node: A.Node = A.Up(levels, span=self.here(t.span))
            if self.tok.kind == "ident" and self.tok.span.offset == node.span.end:
                name = str(self.advance().value)
                node = A.Field(node, name, span=self.here(t.span))
            return node
        if self.is_op("["):
            self.advance()
            items: list[A.Node] = []
            if not self.is_op("]"):
                items.append(self.expression())
                while self.is_op(","):
                    self.advance()
                    items.append(self.expression())
            self.expect_op("]")
            return A.ListLit(tuple(items), span=self.here(t.span))
        if self.is_op("{"):
            return self.object_literal()
        if self.is_op("("):
            if self._lambda_ahead():
                return self.lambda_()
            self.advance()
            inner = self.expression()
            self.expect_op(")")
            return inner
        raise self.error("an expression")

    def object_literal(self) -> A.Node:
        start = self.expect_op("{").span
        entries: list[tuple[str, A.Node]] = []
        while not self.is_op("}"):
            if entries:
                self.expect_op(",")
            key = self.tok
            if key.kind != "str":
                if key.kind == "eof":
                    raise self.error("'}'")
                raise msg.fail(msg.BAD_OBJECT_KEY, key.span, self.source)
            self.advance()
            self.expect_op(":")
            entries.append((str(key.value), self.expression()))
        self.expect_op("}")
        return A.ObjectLit(tuple(entries), span=self.here(start))

    def name_or_call(self) -> A.Node:
        t = self.tok
        w = self.word()
        if w in ("true", "false"):
            self.advance()
            return A.Literal(w == "true", span=t.span)
        if w == "null":
            self.advance()
            return A.Literal(None, span=t.span)
        if w in RESERVED:
            raise self.error("an expression")
        if w == "chain" and self.is_op("(", self.peek()):
            return self.chain()
        if self.is_op("(", self.peek()):
            self.advance()
            args = self.arguments()
            return A.Call(str(t.value), args, span=self.here(t.span))
        self.advance()
        if w == "this":
            return A.This(span=t.span)
        return A.Name(str(t.value), span=t.span)

    def chain(self) -> A.Node:
        start = self.advance().span
        self.expect_op("(")
        events = self.postfix()
        self.expect_op(",")
        ts_field = str(self.ident("a timestamp field name").value)
        self.expect_op(",")
        self.expect_op("[")
        steps = [self.chain_step()]
        while self.is_op(","):
            self.advance()
            steps.append(self.chain_step())
        self.expect_op("]")
        self.expect_op(")")
        return A.Chain(events, ts_field, tuple(steps), span=self.here(start))

    def chain_step(self) -> A.ChainStep:
        label = self.ident("a step label")
        self.expect_op(":")
        self.expect_word("what")
        self.expect_op("(")
        what = self.expression()
        self.expect_op(")")
        when: A.OccursSpec | None = None
        count: int | None = None
        where: A.Node | None = None
        while self.word() in ("when", "count", "where"):
            w = self.word()
            self.advance()
            self.expect_op("(")
            if w == "when":
                when = self.occurs_spec()
            elif w == "count":
                num = self.tok
                if num.kind != "num" or not isinstance(num.value, int):
                    raise self.error("a whole number")
                self.advance()
                count = int(num.value)
            else:
                where = self.expression()
            self.expect_op(")")
        return A.ChainStep(str(label.value), what, when, count, where, span=self.here(label.span))
