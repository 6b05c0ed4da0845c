"""List, filter, sort, page and full-text search instances — all in SQL.

:func:`find` turns a validated :class:`~nextoffer.repository.query.ListQuery` into two
statements over ``instances`` (the page, and the count from the page on) that read the
search index of :mod:`nextoffer.storage.search_index`. Nothing loads a container into
Python. What differs between databases sits in one :class:`Dialect` (SQLite below;
PostgreSQL will add ``body::jsonb #>> '{…}'``, ``~*``, ``LIKE`` and ``tsvector``).

Paging is keyset paging: the sort keys always end with ``instanceId``, so every item has
a unique position and a cursor names it exactly; dates sort by epoch milliseconds, the
unit of the cursor, so the cursor never falls between two items that sort apart.
"""

from __future__ import annotations

import math
import operator
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    Engine,
    Select,
    and_,
    bindparam,
    column,
    event,
    false,
    func,
    intersect,
    literal,
    literal_column,
    not_,
    or_,
    select,
    table,
    true,
    tuple_,
    union,
)
from sqlalchemy.exc import OperationalError

from nextoffer.errors import BadRequest
from nextoffer.repository.query import (
    Filter,
    Kind,
    ListQuery,
    Op,
    Path,
    SortKey,
    Term,
    TermKind,
    TextQuery,
    compiled_pattern,
)
from nextoffer.repository.records import InstanceRecord
from nextoffer.storage import tables as t
from nextoffer.storage.rows import instance_from_row
from nextoffer.storage.search_index import (
    CREATED_MS,
    MODIFIED_MS,
    ROW_BITS,
    search_docs,
    search_scopes,
    search_values,
)

#: Wall-clock budget for evaluating ``~`` patterns in one request.
REGEX_BUDGET_SECONDS = 2.0

_i = t.instances


@dataclass(frozen=True, slots=True)
class Page:
    records: list[InstanceRecord]
    #: Items from this page on (spec §4.4: "starting with the page that was just returned").
    total: int
    #: The sort values of each record, in query order (for the next cursor).
    sort_values: list[tuple[Any, ...]]


# -- the regular-expression function (SQLite) ------------------------------------------

_deadline = threading.local()


class _RegexBudgetExceeded(Exception):
    pass


def _regexp(pattern: str | None, value: Any) -> int:
    if pattern is None or not isinstance(value, str):
        return 0
    limit = getattr(_deadline, "at", None)
    if limit is not None and time.monotonic() > limit:
        raise _RegexBudgetExceeded
    return 1 if compiled_pattern(pattern).fullmatch(value) is not None else 0


def _register(dbapi_connection: Any, _record: Any = None) -> None:
    dbapi_connection.create_function("nextoffer_regexp", 2, _regexp, deterministic=True)


_installed: weakref.WeakSet[Engine] = weakref.WeakSet()
_install_lock = threading.Lock()


def install(engine: Engine) -> None:
    """Register ``nextoffer_regexp`` on every SQLite connection of ``engine`` (idempotent)."""
    if engine.dialect.name != "sqlite" or engine in _installed:
        return
    with _install_lock:
        if engine in _installed:
            return
        event.listen(engine, "connect", _register)
        # Pooled connections opened before the listener get the function on next use.
        engine.dispose(close=False)
        _installed.add(engine)


# -- dialect pieces ------------------------------------------------------------------


class Dialect:
    """SQL that differs between databases. This one is SQLite's."""

    name = "sqlite"

    def json_value(self, parts: tuple[str, ...]) -> ColumnElement[Any]:
        """The value at ``parts`` of the instance body, as it sorts: missing and ``null``
        lowest, then numbers (booleans as 0 and 1), then strings in code-point order, an
        object or array among them as its JSON text (docs/api.md, "orderby")."""
        path = "$" + "".join(f'."{p}"' for p in parts)
        return func.json_extract(_i.c.body, path)

    def sort_value(self, stored: Any) -> Any:
        """A cursor's value for what :meth:`json_value` read."""
        return stored

    def sort_bound(self, value: Any) -> Any:
        """What a cursor's value is compared to :meth:`json_value` as."""
        return value

    def text_test(self, op: Op, value: ColumnElement[Any], text: str) -> ColumnElement[bool]:
        """A string row's ``vtext`` compared to ``text`` by ``op`` (``==`` … ``>=``)."""
        return _compare(op, value, text)

    def regexp(self, pattern: str, value: ColumnElement[Any]) -> ColumnElement[bool]:
        return func.nextoffer_regexp(pattern, value) == 1

    def wildcard(self, value: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        """``*`` any run, ``?`` one character, ``\\`` escapes; case-sensitive (GLOB)."""
        out: list[str] = []
        chars = iter(pattern)
        for char in chars:
            if char == "\\":
                escaped = next(chars, "\\")
                out.append(f"[{escaped}]" if escaped in "*?[" else escaped)
            elif char == "[":
                out.append("[[]")
            else:
                out.append(char)
        return value.op("GLOB")("".join(out))

    def text_ids(self, scope: int, text: TextQuery) -> IdSet:
        """Instance ids of ``scope`` matching the whole of ``text`` (``q``, ``qop``, ``field``).

        Without ``field``, on documents: one FTS5 query for the terms (``OR``) or one per
        term (``AND``), whose rowids name the documents (``rowid >> 20``), each document
        one instance, so no row of ``search_values`` is read and no ``DISTINCT`` needed.
        With ``field``, per string row (its path decides), one set per term.
        """
        if text.fields:
            return combine(
                [self.text_term(scope, term, text.fields) for term in text.terms],
                text.require_all,
            )
        d = search_docs.alias()
        groups = [text.terms] if not text.require_all else [(term,) for term in text.terms]
        tests = [
            d.c.doc.in_(
                select(literal_column(f"search_fts.rowid >> {ROW_BITS}"))
                .select_from(_fts)
                .where(_fts_match(" OR ".join(_fts_phrase(term) for term in group)))
            )
            for group in groups
        ]
        rows = select(d.c.instance_id).where(*tests, d.c.scope == scope)
        # Probed, each FTS query still runs once (uncorrelated) and the instance's document
        # is looked up by its id.
        probe = select(literal(1)).where(d.c.instance_id == _i.c.instance_id, *tests)
        return IdSet(rows, unique=True, probe=probe, streams=False)

    def text_term(self, scope: int, term: Term, fields: tuple[Path, ...]) -> Select[Any]:
        """Instance ids of ``scope`` with a string property among ``fields`` matching ``term``
        (one FTS5 query; the FTS rowid is the ``search_values`` row)."""
        v = search_values.alias()
        # The FTS query runs once, as a list of rowids looked up by primary key. Joined, or
        # with an indexable condition on search_values.scope, SQLite would run it again
        # per candidate row: "scope + 0" keeps the scope test off the index.
        matched = select(_fts.c.rowid).where(_fts_match(_fts_phrase(term)))
        sub = select(v.c.instance_id).where(v.c.id.in_(matched), v.c.scope + 0 == scope)
        if not fields:
            return sub
        # A field names a property and everything below it ("/" sorts right after ".").
        return sub.where(
            or_(
                *(
                    or_(
                        v.c.path == f.dotted,
                        and_(v.c.path > f.dotted + ".", v.c.path < f.dotted + "/"),
                    )
                    for f in fields
                )
            )
        )


_fts = table("search_fts", column("rowid"))


def _fts_phrase(term: Term) -> str:
    """``term`` in FTS5's syntax: a quoted phrase, ``*`` for a prefix, column ``vtext``."""
    phrase = '"' + " ".join(term.tokens) + '"' + (" *" if term.kind is TermKind.PREFIX else "")
    return f"vtext : {phrase}"


def _fts_match(query: str) -> ColumnElement[bool]:
    # The FTS query runs once, as a list of rowids: joined, SQLite would run it again per
    # candidate row. Tokens hold letters and digits only (no FTS5 syntax).
    return literal_column("search_fts").op("MATCH")(query)


@dataclass(frozen=True, slots=True)
class IdSet:
    """A set of instance ids every result must be in (a filter on the index, ``q``)."""

    rows: Select[Any] | CompoundSelect[Any]
    #: No instance appears twice in ``rows`` (counting needs no ``DISTINCT``).
    unique: bool = False
    #: The same test for one instance (correlated to ``instances``), when there is one.
    probe: Select[Any] | None = None
    #: Whether the first of ``rows`` come cheaply: index ranges read in order, not a
    #: full-text query whose every match is collected before the first comes out.
    streams: bool = True


def combine(sets: list[Select[Any]], require_all: bool) -> IdSet:
    """Full-text sets, one per term, as one: all of them or any."""
    if len(sets) == 1:
        return IdSet(sets[0], streams=False)
    rows = intersect(*sets) if require_all else union(*sets)
    return IdSet(rows, unique=True, streams=False)


SQLITE = Dialect()


# -- building the query --------------------------------------------------------------


def _sort_expression(dialect: Dialect, path: Path) -> ColumnElement[Any]:
    if path.envelope == "instanceId":
        return _i.c.instance_id
    if path.envelope == "repo:createdDate":
        return literal_column(f"instances.{CREATED_MS}")
    if path.envelope == "repo:lastModifiedDate":
        return literal_column(f"instances.{MODIFIED_MS}")
    if path.envelope is not None:
        return _envelope_column(path.envelope)
    return dialect.json_value(path.parts)


def _envelope_column(name: str) -> ColumnElement[Any]:
    return {
        "instanceId": _i.c.instance_id,
        "repo:etag": _i.c.etag,
        "repo:createdDate": _i.c.created_us,
        "repo:lastModifiedDate": _i.c.modified_us,
        "repo:createdBy": _i.c.created_by,
        "repo:lastModifiedBy": _i.c.modified_by,
        "repo:createdByClientId": _i.c.created_client,
        "repo:lastModifiedByClientId": _i.c.modified_client,
    }[name]


_OPERATORS = {
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
}


def _compare(op: Op, left: ColumnElement[Any], right: Any) -> ColumnElement[bool]:
    result: ColumnElement[bool] = _OPERATORS[op](left, right)
    return result


class _Builder:
    """The ``WHERE`` of a query. ``probe`` chooses how an index filter is tested: as a
    set of ids built once (``IN``, cheap when the filter keeps few items) or per
    instance the sort order walks (cheap when it keeps many: the page fills early)."""

    def __init__(
        self,
        dialect: Dialect,
        container_id: str,
        query: ListQuery,
        scope: int,
        *,
        probe: bool = False,
    ) -> None:
        self.dialect = dialect
        self.container_id = container_id
        self.query = query
        self.scope = scope
        self.probe = probe
        #: The instance-id sets every result must be in (filters on the index, q terms).
        self.id_sets: list[IdSet] = []
        #: Whether those sets are all there is to the query (then counting needs no
        #: instances rows: every id of the scope is of this container and schema).
        self.only_id_sets = True
        #: Whether some set could be tested per instance instead (``probe``).
        self.probeable = False

    def _in(self, ids: IdSet) -> ColumnElement[bool]:
        self.id_sets.append(ids)
        if ids.probe is None:
            return _i.c.instance_id.in_(ids.rows)
        self.probeable = True
        if self.probe:
            # A scalar subquery, not EXISTS: PostgreSQL would plan EXISTS as a join over
            # the whole set, which is what probing avoids.
            return ids.probe.limit(1).scalar_subquery().is_not(None)
        return _i.c.instance_id.in_(ids.rows)

    def _values(
        self, path: Path, *conditions: ColumnElement[bool], unique: bool = False
    ) -> ColumnElement[bool]:
        """Instances with a row at ``path`` meeting ``conditions`` (on ``search_values``)."""
        v = search_values
        tests = (v.c.scope == self.scope, v.c.path == path.dotted, *conditions)
        rows = select(v.c.instance_id).where(*tests)
        probe = select(literal(1)).where(*tests, v.c.instance_id == _i.c.instance_id)
        return self._in(IdSet(rows, unique=unique, probe=probe))

    def _any_of(self, path: Path, alternatives: list[ColumnElement[bool]]) -> ColumnElement[bool]:
        """Instances with a row at ``path`` meeting one of ``alternatives``: a UNION, each
        alternative one index range (an OR of them in one statement is not, on SQLite)."""
        if len(alternatives) == 1:
            return self._values(path, alternatives[0])
        v = search_values
        head = (v.c.scope == self.scope, v.c.path == path.dotted)
        rows = union(*(select(v.c.instance_id).where(*head, test) for test in alternatives))
        probe = select(literal(1)).where(
            *head, or_(*alternatives), v.c.instance_id == _i.c.instance_id
        )
        return self._in(IdSet(rows, unique=True, probe=probe))

    def _value_test(self, op: Op, flt: Filter) -> list[ColumnElement[bool]]:
        """Per-row conditions on ``search_values`` for one comparison (EQ…GE)."""
        literal_ = flt.literal
        assert literal_ is not None
        v = search_values.c
        # Date strings compare as instants with a date literal, not as text; otherwise
        # every row with a vtext (s, b, d) compares as text. Each test names its vtypes,
        # which lead the (scope, path, vtype, value) indexes: one range per vtype.
        text_types = ["s", "b"] if literal_.instant_us is not None else ["s", "b", "d"]
        tests = [and_(v.vtype.in_(text_types), self.dialect.text_test(op, v.vtext, literal_.text))]
        if literal_.instant_us is not None:
            tests.append(and_(v.vtype == "d", _compare(op, v.vnum, float(literal_.instant_us))))
        if literal_.number is not None:
            tests.append(and_(v.vtype == "n", _compare(op, v.vnum, literal_.number)))
        return tests

    @staticmethod
    def _one_row_each(op: Op, flt: Filter) -> bool:
        """Whether at most one row per instance passes ``op`` (rows are unique per
        instance and path): an equality with a value that reads one way only."""
        literal_ = flt.literal
        assert literal_ is not None
        return (
            op is Op.EQ
            and literal_.number is None
            and literal_.instant_us is None
            and literal_.text not in ("true", "false")
        )

    def _instance_filter(self, flt: Filter) -> ColumnElement[bool]:
        path = flt.path
        if flt.op is Op.EXISTS:
            return self._values(path)
        if flt.op is Op.MATCH:
            assert flt.literal is not None
            v = search_values.c
            return self._values(
                path, v.vtype.in_(["s", "d"]), self.dialect.regexp(flt.literal.text, v.vtext)
            )
        op = Op.EQ if flt.op is Op.NE else flt.op
        tests = self._value_test(op, flt)
        if flt.op is Op.NE:
            self.only_id_sets = False
            scalars = self._values(path, search_values.c.vtype.in_(["s", "d", "n", "b"]))
            values = search_values
            equal = select(values.c.instance_id).where(
                values.c.scope == self.scope, values.c.path == path.dotted, or_(*tests)
            )
            return and_(scalars, not_(_i.c.instance_id.in_(equal)))
        if len(tests) == 1:
            return self._values(path, tests[0], unique=self._one_row_each(op, flt))
        return self._any_of(path, tests)

    def _envelope_filter(self, flt: Filter) -> ColumnElement[bool]:
        assert flt.path.envelope is not None
        if flt.op is Op.EXISTS:
            return true()
        self.only_id_sets = False
        column = _envelope_column(flt.path.envelope)
        literal_ = flt.literal
        assert literal_ is not None
        kind = flt.path.kind
        if flt.op is Op.MATCH:
            return self.dialect.regexp(literal_.text, column)
        if kind is Kind.DATE:
            return _compare(flt.op, column, literal_.instant_us)
        if kind is Kind.INT:
            assert literal_.number is not None
            return _compare(flt.op, column, int(literal_.number))
        return _compare(flt.op, column, literal_.text)

    def conditions(self) -> list[ColumnElement[bool]]:
        query = self.query
        where: list[ColumnElement[bool]] = [
            _i.c.container_id == self.container_id,
            _i.c.schema_id == query.schema.type.schema_id,
        ]
        for flt in query.filters:
            condition = (
                self._envelope_filter(flt) if flt.path.envelope else self._instance_filter(flt)
            )
            if flt.negated:
                # The id sets gathered for this filter are what it excludes, not a bound.
                self.only_id_sets = False
                condition = not_(condition)
            where.append(condition)
        if query.ids:
            self.only_id_sets = False
            where.append(_i.c.at_id.in_(list(query.ids)))
        if query.name is not None:
            v = search_values.c
            name_test = (
                self.dialect.wildcard(v.vtext, query.name)
                if query.name_wildcard
                else self.dialect.text_test(Op.EQ, v.vtext, query.name)
            )
            where.append(
                self._values(
                    Path("_instance.xdm:name", parts=("xdm:name",)),
                    and_(v.vtype.in_(["s", "d"]), name_test),
                    unique=not query.name_wildcard,
                )
            )
        if query.text is not None:
            where.append(self._in(self.dialect.text_ids(self.scope, query.text)))
        return where

    def order(self) -> list[tuple[ColumnElement[Any], SortKey]]:
        return [(_sort_expression(self.dialect, key.path), key) for key in self.query.order]

    def after(
        self, keys: list[tuple[ColumnElement[Any], SortKey]], start: tuple[Any, ...]
    ) -> ColumnElement[bool]:
        """Items strictly after the cursor in the sort order (NULL sorts lowest)."""
        values = [self._bind(key, value) for (_, key), value in zip(keys, start, strict=True)]
        nullable = any(key.path.envelope is None for _, key in keys)
        directions = {key.descending for _, key in keys}
        if not nullable and len(directions) == 1:
            # One row-value comparison: SQLite and PostgreSQL walk an index range for it.
            left = tuple_(*(expr for expr, _ in keys))
            right = tuple_(*(literal(v) for v in values))
            return left < right if directions == {True} else left > right
        clauses: list[ColumnElement[bool]] = []
        for j, ((expr, key), value) in enumerate(zip(keys, values, strict=True)):
            equal = [
                e.is_(None) if v is None else e == v
                for (e, _), v in zip(keys[:j], values[:j], strict=True)
            ]
            clauses.append(and_(*equal, self._beyond(expr, key.descending, value)))
        (first, first_key), first_value = keys[0], values[0]
        if first_key.path.envelope is not None:
            # Redundant, but it lets the database start from the cursor in an index
            # (e.g. ``-repo:createdDate,instanceId``, whose directions differ).
            bound = first <= first_value if first_key.descending else first >= first_value
            return and_(bound, or_(*clauses))
        return or_(*clauses)

    @staticmethod
    def _beyond(expr: ColumnElement[Any], descending: bool, value: Any) -> ColumnElement[bool]:
        if not descending:
            return expr.is_not(None) if value is None else expr > value
        return false() if value is None else or_(expr < value, expr.is_(None))

    def _bind(self, key: SortKey, value: Any) -> Any:
        if isinstance(value, bool):
            value = 1 if value else 0  # json_extract reads JSON booleans as 1 and 0
        if key.path.kind in (Kind.DATE, Kind.INT, Kind.TEXT):
            return value
        return self.dialect.sort_bound(value)


def _ordering(keys: list[tuple[ColumnElement[Any], SortKey]]) -> list[ColumnElement[Any]]:
    out: list[ColumnElement[Any]] = []
    for expr, key in keys:
        if key.path.envelope is not None:
            # Envelope columns are NOT NULL: a NULLS clause would only keep PostgreSQL
            # from reading an index in order (its ASC puts NULLs last).
            out.append(expr.desc() if key.descending else expr.asc())
        else:
            # NULL sorts lowest in both directions' sense: first ascending, last descending.
            out.append(expr.desc().nulls_last() if key.descending else expr.asc().nulls_first())
    return out


def _cursor_value(dialect: Dialect, key: SortKey, value: Any) -> Any:
    kind = key.path.kind
    if kind in (Kind.DATE, Kind.INT):
        return int(value)
    return value if kind is Kind.TEXT else dialect.sort_value(value)


_INDEXED_SORTS = frozenset({"instanceId", "repo:createdDate", "repo:lastModifiedDate"})


def _few(query: ListQuery, stored: int) -> int:
    """Up to how many matches the ids are collected and the page read from them: while
    ``total² ≤ limit × stored``, walking the sort order would visit more instances than
    there are matches."""
    return min(max(math.isqrt(query.limit * max(stored, 1)), query.limit), _MAX_FEW)


#: At most this many ids are bound into one page statement (SQLite takes 32,766).
_MAX_FEW = 5000


def _should_probe(query: ListQuery, total: int, stored: int) -> bool:
    """Test each instance the sort order walks (rather than collect the ids) when the
    walk is expected to visit fewer instances than the filters keep."""
    first = query.order[0].path.envelope
    if first not in _INDEXED_SORTS or total == 0:
        return False  # the sort visits every instance anyway: build the sets once
    return query.limit * stored < total * total


def find(
    conn: Connection, container_id: str, query: ListQuery, *, dialect: Dialect = SQLITE
) -> Page:
    """One page of ``query`` in the container, and how many items remain from it on.

    The matches are counted first: besides ``total``, their number decides how the page
    reads them. Few (see :func:`_few`): their ids, read with the count, are the page's
    candidates. Many: the page walks the sort order and tests each instance
    (:func:`_should_probe`), or tests membership in the id sets.
    """
    schema_id = query.schema.type.schema_id
    found = conn.execute(_SCOPE, {"container_id": container_id, "schema_id": schema_id}).first()
    if found is None:  # nothing of this schema was ever stored in the container
        return Page([], 0, [])
    scope, stored = int(found.scope), int(found.stored or 0)
    builder = _Builder(dialect, container_id, query, scope)
    where = builder.conditions()
    keys = builder.order()
    counted = list(where)  # the whole filtered list (dps); xcore counts from the page on
    cursor = builder.after(keys, query.start) if query.start is not None else None
    if cursor is not None and query.count_from_start:
        counted.append(cursor)
    on_index = builder.only_id_sets and builder.id_sets and len(counted) == len(where)
    matches: list[str] | None = None
    _deadline.at = time.monotonic() + REGEX_BUDGET_SECONDS
    try:
        if on_index:
            # Counted on the index alone (no instances rows to visit).
            ids = _ids(builder.id_sets)
            few = _few(query, stored)
            if all(s.streams for s in builder.id_sets):
                matches = list(conn.execute(ids.limit(few + 1)).scalars())
            if matches is not None and len(matches) <= few:
                total = len(matches)
            else:
                matches = None
                count = select(func.count()).select_from(ids.subquery())
                total = int(conn.execute(count).scalar() or 0)
        elif len(where) == 2 and not builder.id_sets and _never_null(keys):
            # No filter: the kept count of the schema in the container is the whole list,
            # and from a cursor on it is that minus the items up to the cursor, an index
            # range as long as the walk so far (what follows would be the rest of it).
            total = stored
            if cursor is not None and query.count_from_start:
                up_to = select(func.count()).select_from(_i).where(*where, not_(cursor))
                total -= int(conn.execute(up_to).scalar() or 0)
        else:
            count = select(func.count()).select_from(_i).where(*counted)
            total = int(conn.execute(count).scalar() or 0)
        if matches is not None:
            where = [*where[:2], _i.c.instance_id.in_(matches)]
        elif builder.probeable and _should_probe(query, total, stored):
            builder = _Builder(dialect, container_id, query, scope, probe=True)
            where = builder.conditions()
        if cursor is not None:
            where.append(cursor)
        sort_columns = [expr.label(f"k{n}") for n, (expr, _) in enumerate(keys)]
        page_statement = (
            select(_i, *sort_columns).where(*where).order_by(*_ordering(keys)).limit(query.limit)
        )
        rows = conn.execute(page_statement).all() if total else []
    except OperationalError as exc:
        if "user-defined function raised exception" in str(exc.orig):
            raise BadRequest(
                f"property: the regular expression took more than {REGEX_BUDGET_SECONDS:g} s "
                "to evaluate; make it more specific",
                pointer="property",
            ) from None
        raise
    finally:
        _deadline.at = None
    records = [instance_from_row(row) for row in rows]
    sort_values = [
        tuple(
            _cursor_value(builder.dialect, key, getattr(row, f"k{n}"))
            for n, (_, key) in enumerate(keys)
        )
        for row in rows
    ]
    return Page(records, total, sort_values)


_counts = t.instance_counts
#: The scope of (container, schema) and how many instances it holds.
_SCOPE = select(
    search_scopes.c.scope,
    select(_counts.c.count)
    .where(
        _counts.c.container_id == bindparam("container_id"),
        _counts.c.schema_id == bindparam("schema_id"),
    )
    .scalar_subquery()
    .label("stored"),
).where(
    search_scopes.c.container_id == bindparam("container_id"),
    search_scopes.c.schema_id == bindparam("schema_id"),
)


def _never_null(keys: list[tuple[ColumnElement[Any], SortKey]]) -> bool:
    """Whether every sort key is an envelope column (NOT NULL): then ``NOT`` of the
    cursor condition is exactly the items up to the cursor."""
    return all(key.path.envelope is not None for _, key in keys)


def _ids(sets: list[IdSet]) -> Select[Any]:
    """The instances in every one of ``sets``: the first set's ids (``DISTINCT`` unless
    they are unique already) that are in the others."""
    first, *others = sorted(sets, key=lambda s: not s.unique)
    driver = first.rows.subquery()
    ids = select(driver.c.instance_id)
    if not first.unique:
        ids = ids.distinct()
    return ids.where(*(driver.c.instance_id.in_(other.rows) for other in others))
