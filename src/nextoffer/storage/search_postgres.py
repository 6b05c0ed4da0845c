"""The PostgreSQL pieces of search: what :class:`~nextoffer.storage.search.Dialect` does
with SQLite's ``json_extract``, a Python ``REGEXP`` function, ``GLOB`` and FTS5.

=============== ============================================ ===============================
piece           SQLite                                       PostgreSQL (here)
=============== ============================================ ===============================
sort by a JSON  ``json_extract(body, '$."a"."b"')``          ``body::jsonb #> '{a,b}'``
property                                                     in SQLite's order (booleans as
                                                             1/0, null as SQL NULL, strings
                                                             above numbers: json_value)
``~`` pattern   Python ``re`` fullmatch, ignoring case,      ``~*`` anchored as
                2 s budget per request                       ``^(?:pattern)$``, ``\\b``,
                                                             ``\\B``, ``\\xHH`` respelt
name wildcards  ``GLOB``                                     ``LIKE`` with ``\\`` escapes
``q`` terms     FTS5 phrase query on ``search_fts``          ``vwords @@ to_tsquery('simple',
                                                             'a' <-> 'b':*)``, GIN index
=============== ============================================ ===============================

Both sides find words the same way: ``vwords`` holds the tokens of
:func:`nextoffer.repository.query.tokens` (``search_index.words``), the ones a ``q`` term
is split into, so accents, URLs and e-mail addresses split alike on both databases.

Known differences, documented in ``docs/deploy.md``: text *sorts* by the database's
collation (create it with ``C.UTF-8`` for SQLite's byte order) while filters *compare* in
code point order whatever it is (``vtext`` is ``COLLATE "C"``); the regular-expression
budget is PostgreSQL's ``statement_timeout`` (its engine does not backtrack exponentially
as Python's does).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnClause,
    ColumnElement,
    Connection,
    Integer,
    Select,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, TEXT
from sqlalchemy.types import TypeDecorator

from nextoffer.repository.query import Op, Path, Term, TermKind, TextQuery
from nextoffer.storage import tables as t
from nextoffer.storage.search import SQLITE, Dialect, IdSet, combine
from nextoffer.storage.search_index import search_docs, search_values

_i = t.instances
_SIMPLE: ColumnClause[Any] = literal_column("'simple'::regconfig")


class _SortKey(TypeDecorator[Any]):
    """jsonb whose comparisons bind the other side as jsonb too: a cursor's ``"abc"`` or
    ``3`` is compared as the JSON value, not as text (there is no ``jsonb > text``)."""

    impl = JSONB
    cache_ok = True

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        return self


class PostgresDialect(Dialect):
    name = "postgresql"

    def json_value(self, parts: tuple[str, ...]) -> ColumnElement[Any]:
        """As SQLite's, in jsonb, whose own order puts strings below numbers and objects
        and arrays above both: a string sorts as a one-string array (above every
        number; arrays compare item by item), an object or array as one holding its
        text, a boolean as 0 or 1. :meth:`sort_value` and :meth:`sort_bound` take the
        arrays off a cursor's values and put them back."""
        path = cast(list(parts), ARRAY(TEXT))
        value = cast(_i.c.body, JSONB).op("#>")(path)
        kind = func.jsonb_typeof(value)
        # An object's or array's text as stored (``json`` keeps it: compact, its keys in
        # the order sent), as SQLite's json_extract gives it; jsonb's would reorder keys.
        as_stored = cast(cast(_i.c.body, JSON).op("#>")(path), TEXT)
        typed = case(
            (kind == "number", value),
            (kind == "string", func.jsonb_build_array(value)),
            (kind == "boolean", func.to_jsonb(cast(cast(value, Boolean), Integer))),
            (kind.in_(["object", "array"]), func.jsonb_build_array(as_stored)),
            else_=null(),  # missing, or JSON null
        )
        return type_coerce(typed, _SortKey())

    def sort_value(self, stored: Any) -> Any:
        return stored[0] if isinstance(stored, list) else stored

    def sort_bound(self, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def text_test(self, op: Op, value: ColumnElement[Any], text: str) -> ColumnElement[bool]:
        """As SQLite's, on what the index holds: ``vkey``, the strings' first
        :data:`~nextoffer.storage.tables.TEXT_PREFIX` characters. A literal shorter than
        that compares with a string's prefix exactly as with the string (the prefix of a
        string past the literal's length is past it too), so the index alone answers; a
        longer one bounds the prefix there and is compared whole on the row."""
        prefix = search_values.c.vkey
        if len(text) < t.TEXT_PREFIX:
            return super().text_test(op, prefix, text)
        head = text[: t.TEXT_PREFIX]
        if op is Op.EQ:
            bound = prefix == head
        else:
            bound = prefix <= head if op in (Op.LT, Op.LE) else prefix >= head
        return and_(bound, super().text_test(op, value, text))

    def regexp(self, pattern: str, value: ColumnElement[Any]) -> ColumnElement[bool]:
        return value.op("~*")(literal(f"^(?:{to_postgres(pattern)})$"))

    def wildcard(self, value: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        """``LIKE``, after a ``LIKE`` of the pattern's literal start on the indexed prefix
        (one index range: the prefix is in the "C" collation)."""
        out: list[str] = []  # one LIKE token per character of the pattern
        literal_start = -1  # how many tokens precede the first wildcard (-1: none yet)
        chars = iter(pattern)
        for char in chars:
            if char in "*?":
                literal_start = len(out) if literal_start < 0 else literal_start
                out.append("%" if char == "*" else "_")
                continue
            if char == "\\":
                char = next(chars, "\\")
            out.append("\\" + char if char in "%_\\" else char)
        whole = value.like("".join(out), escape="\\")
        start = out[: literal_start if literal_start >= 0 else len(out)][: t.TEXT_PREFIX]
        if not start:
            return whole
        return and_(search_values.c.vkey.like("".join(start) + "%", escape="\\"), whole)

    def text_ids(self, scope: int, text: TextQuery) -> IdSet:
        """As SQLite's, on ``search_docs.words`` when no ``field`` is named and every term
        is one word (a word is in a document exactly when it is in one of its strings);
        a phrase needs its words' positions within one string: the rows decide."""
        if text.fields or any(len(term.tokens) > 1 for term in text.terms):
            terms = [self.text_term(scope, term, text.fields) for term in text.terms]
            return combine(terms, text.require_all)
        joined = (" & " if text.require_all else " | ").join(_tsquery(t) for t in text.terms)
        d = search_docs.alias()
        matched = d.c.words.op("@@")(func.to_tsquery(_SIMPLE, literal(joined)))
        rows = select(d.c.instance_id).where(d.c.scope == scope, matched)
        probe = select(literal(1)).where(d.c.instance_id == _i.c.instance_id, matched)
        return IdSet(rows, unique=True, probe=probe, streams=False)

    def text_term(self, scope: int, term: Term, fields: tuple[Path, ...]) -> Select[Any]:
        """Instance ids of ``scope`` with a string property (among ``fields``) matching ``term``:
        the term's tokens one after another (``<->``), the last a prefix for ``offe*``."""
        query = func.to_tsquery(_SIMPLE, literal(_tsquery(term)))
        v = search_values.alias()
        sub = select(v.c.instance_id).where(v.c.scope == scope, v.c.vwords.op("@@")(query))
        if fields:
            # A field names a property and everything below it; LIKE (not < and >) so the
            # database's collation does not matter.
            below = [v.c.path.startswith(f.dotted + ".", autoescape=True) for f in fields]
            sub = sub.where(or_(*(v.c.path == f.dotted for f in fields), *below))
        return sub


def _tsquery(term: Term) -> str:
    words = [f"'{token}'" for token in term.tokens]  # tokens hold letters and digits only
    if term.kind is TermKind.PREFIX:
        words[-1] += ":*"
    return " <-> ".join(words)


POSTGRES = PostgresDialect()


def dialect_for(conn: Connection) -> Dialect:
    """The search dialect of the database ``conn`` is connected to."""
    return POSTGRES if conn.dialect.name == "postgresql" else SQLITE


#: Python's escapes that PostgreSQL spells otherwise: word boundaries (``\b`` is a
#: backspace there) and two hex digits (``\x`` takes as many as follow there). A bracket
#: expression is taken whole: a ``\b`` in it is a backspace on both.
_PYTHON_ESCAPE = re.compile(
    r"""
      \\[bB]                                # a word boundary, or not one
    | \\x([0-9A-Fa-f]{2})                   # a character by two hex digits
    | \\.                                   # any other escape, as it is
    | \[\^?\]?(?:\\.|[^\]\\])*\]?           # a bracket expression
    """,
    re.DOTALL | re.VERBOSE,
)


def to_postgres(pattern: str) -> str:
    """A pattern :func:`~nextoffer.repository.query.check_pattern` took, as PostgreSQL's
    engine must read it to match what Python's ``re`` matches."""

    def spell(escape: re.Match[str]) -> str:
        text = escape.group()
        if text in ("\\b", "\\B"):
            return "\\y" if text == "\\b" else "\\Y"
        if escape.group(1) is not None:
            return "\\u00" + escape.group(1)
        if text.startswith("["):  # a bracket expression: only its hex escapes change
            return re.sub(r"\\x([0-9A-Fa-f]{2})", r"\\u00\1", text)
        return text

    return _PYTHON_ESCAPE.sub(spell, pattern)
