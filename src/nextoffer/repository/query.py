"""The list and search query language of the repository (spec offer-api-xcore §5): no IO.

``parse_query(params)`` turns the query parameters of ``GET /{C}/instances`` and
``GET /{C}/queries/core/search`` into a validated, immutable :class:`ListQuery`; every
mistake is a :class:`BadRequest` whose ``pointer`` names the parameter. The storage layer
turns a ``ListQuery`` into SQL; :func:`matches` evaluates one filter on a JSON document
(the home document filters its few containers with it).

Choices where the spec is silent are documented in ``docs/api.md`` ("Search and listing").
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from nextoffer.errors import BadRequest
from nextoffer.ids import epoch_micros, parse_datetime
from nextoffer.pql.regex import problem as regex_problem
from nextoffer.pql.regex import repeats as regex_repeats
from nextoffer.pql.regex import set_span
from nextoffer.repository.objects import SchemaRef, parse_schema_ref

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
MAX_FILTERS = 32
MAX_IDS = 200
MAX_REGEX_LENGTH = 256
MAX_VALUE_LENGTH = 2048
MAX_Q_LENGTH = 1024
MAX_Q_TERMS = 16
MAX_FIELDS = 16
MAX_PATH_DEPTH = 16
MAX_SORT_KEYS = 8


class Op(Enum):
    """A property filter's operator (spec §5.2)."""

    EQ = "=="  # equal (case-sensitive for strings)
    NE = "!="  # has a value and none equals
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    MATCH = "~"  # regular expression over the whole string, case-insensitive
    EXISTS = ""  # the bare path: the property is present


class Kind(Enum):
    """How an envelope property is stored and compared."""

    TEXT = "text"
    INT = "int"
    DATE = "date"  # compared in µs, sorted and paged in epoch milliseconds


#: Envelope properties a filter or a sort may name, and their kinds.
ENVELOPE: dict[str, Kind] = {
    "instanceId": Kind.TEXT,
    "repo:etag": Kind.INT,
    "repo:createdDate": Kind.DATE,
    "repo:lastModifiedDate": Kind.DATE,
    "repo:createdBy": Kind.TEXT,
    "repo:lastModifiedBy": Kind.TEXT,
    "repo:createdByClientId": Kind.TEXT,
    "repo:lastModifiedByClientId": Kind.TEXT,
}

INSTANCE_PREFIX = "_instance"


@dataclass(frozen=True, slots=True)
class Path:
    """A property path: an envelope property, or ``parts`` below ``_instance``."""

    text: str
    envelope: str | None = None
    parts: tuple[str, ...] = ()

    @property
    def kind(self) -> Kind | None:
        return ENVELOPE[self.envelope] if self.envelope else None

    @property
    def dotted(self) -> str:
        """The path below ``_instance`` as the search index stores it: ``xdm:rank.xdm:priority``."""
        return ".".join(self.parts)


INSTANCE_ID = Path("instanceId", envelope="instanceId")


@dataclass(frozen=True, slots=True)
class Literal:
    """A filter value as written, and the number and instant it also reads as."""

    text: str
    number: float | None = None
    instant_us: int | None = None


@dataclass(frozen=True, slots=True)
class Filter:
    path: Path
    op: Op
    literal: Literal | None = None  # None for EXISTS
    #: The dps form's leading ``!``: the items the filter would not keep.
    negated: bool = False


@dataclass(frozen=True, slots=True)
class SortKey:
    path: Path
    descending: bool = False

    def text(self) -> str:
        return ("-" if self.descending else "") + self.path.text


class TermKind(Enum):
    WORD = "word"  # one token
    PHRASE = "phrase"  # consecutive tokens in one string value
    PREFIX = "prefix"  # tokens, the last one a prefix (``offe*``)


@dataclass(frozen=True, slots=True)
class Term:
    kind: TermKind
    tokens: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TextQuery:
    terms: tuple[Term, ...]
    require_all: bool  # qop=AND
    fields: tuple[Path, ...]  # empty: every string property of _instance


@dataclass(frozen=True, slots=True)
class ListQuery:
    schema: SchemaRef
    filters: tuple[Filter, ...] = ()
    ids: tuple[str, ...] = ()
    name: str | None = None  # exact, or a wildcard pattern when ``name_wildcard``
    name_wildcard: bool = False
    text: TextQuery | None = None
    #: The sort keys, always ending with ``instanceId`` (the tie-breaker).
    order: tuple[SortKey, ...] = (SortKey(INSTANCE_ID),)
    ordered_by_client: bool = False
    start: tuple[Any, ...] | None = None  # one value per sort key
    limit: int = DEFAULT_LIMIT
    #: ``Page.total`` counts from the page on (xcore, spec §4.4); False: the whole list (dps).
    count_from_start: bool = True

    def order_text(self) -> str:
        return ",".join(key.text() for key in self.order)


# -- paths and values ----------------------------------------------------------------

_BAD_SEGMENT = re.compile(r'["\\\s]')


def parse_path(text: str, *, where: str) -> Path:
    """``instanceId``, ``repo:createdDate``, ``_instance.xdm:rank.xdm:priority``."""
    path = text.strip()
    if path in ENVELOPE:
        return Path(path, envelope=path)
    if path == INSTANCE_PREFIX or not path.startswith(INSTANCE_PREFIX + "."):
        known = ", ".join(ENVELOPE)
        raise BadRequest(
            f"{where}: unknown property {path!r}; name an envelope property ({known}) or a "
            f"path into the instance such as _instance.xdm:name",
            pointer=where,
        )
    parts = tuple(path[len(INSTANCE_PREFIX) + 1 :].split("."))
    if len(parts) > MAX_PATH_DEPTH:
        raise BadRequest(f"{where}: {path!r} is deeper than {MAX_PATH_DEPTH} levels", pointer=where)
    for part in parts:
        if not part or _BAD_SEGMENT.search(part):
            raise BadRequest(
                f"{where}: {path!r} has an empty segment or one with a quote, backslash or space",
                pointer=where,
            )
    return Path(path, parts=parts)


_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def as_number(text: str) -> float | None:
    return float(text) if _NUMBER.fullmatch(text) else None


def as_instant(text: str) -> int | None:
    """Epoch µs of an RFC 3339 date-time, or None."""
    try:
        return epoch_micros(parse_datetime(text))
    except (ValueError, OverflowError):
        return None


def _literal(path: Path, op: Op, text: str, *, where: str) -> Literal:
    if len(text) > MAX_VALUE_LENGTH:
        raise BadRequest(
            f"{where}: the value is longer than {MAX_VALUE_LENGTH} characters", pointer=where
        )
    kind = path.kind
    if op is Op.MATCH:
        if kind in (Kind.INT, Kind.DATE):
            raise BadRequest(f"{where}: ~ applies to strings, not to {path.text}", pointer=where)
        return Literal(check_pattern(text, where=where))
    if kind is Kind.INT:
        if not re.fullmatch(r"-?\d{1,18}", text):
            raise BadRequest(
                f"{where}: {path.text} is compared with an integer, not {text!r}", pointer=where
            )
        return Literal(text, number=float(int(text)))
    if kind is Kind.DATE:
        instant = as_instant(text)
        if instant is None and re.fullmatch(r"-?\d{1,15}", text):
            instant = int(text) * 1000  # epoch milliseconds, as in cursors
        if instant is None:
            raise BadRequest(
                f"{where}: {path.text} is compared with an RFC 3339 date-time such as "
                f"2020-10-21T22:28:11.111Z (or epoch milliseconds), not {text!r}",
                pointer=where,
            )
        return Literal(text, instant_us=instant)
    return Literal(text, number=as_number(text), instant_us=as_instant(text))


#: A leading group of inline flags already in effect for ``~`` (it ignores case, and ``.``
#: matches newlines): dropped, as PostgreSQL takes flags only at a pattern's very start.
_FLAGS_IN_EFFECT = re.compile(r"\(\?[is]+\)")
#: What may follow ``(?`` on both databases: a non-capturing group and the lookarounds.
_PORTABLE_GROUPS = (":", "=", "!", "<=", "<!")


def check_pattern(pattern: str, *, where: str) -> str:
    """Refuse patterns that are too long, invalid, can backtrack without bound, or would
    mean one thing to Python's ``re`` (SQLite) and another to PostgreSQL's engine. Returns
    the pattern to run: a leading ``(?i)``, ``(?s)`` or ``(?is)``, in effect anyway, dropped."""
    flags = _FLAGS_IN_EFFECT.match(pattern)
    if flags is not None:
        pattern = pattern[flags.end() :]
    if len(pattern) > MAX_REGEX_LENGTH:
        raise BadRequest(
            f"{where}: the regular expression is longer than {MAX_REGEX_LENGTH} characters",
            pointer=where,
        )
    unportable = _unportable(pattern)
    if unportable is not None:
        raise BadRequest(
            f"{where}: the regular expression uses {unportable}, which this API does not "
            "take (it means another thing on PostgreSQL)",
            pointer=where,
        )
    why = regex_problem(pattern)
    if why == "nested":
        raise BadRequest(
            f"{where}: the regular expression repeats a group that itself repeats or "
            "alternates, e.g. (a+)+ or (a|b)*; such patterns can run without bound",
            pointer=where,
        )
    if why is not None:
        raise BadRequest(f"{where}: not a valid regular expression ({why})", pointer=where)
    return pattern


def _unportable(pattern: str) -> str | None:
    """The first construct of ``pattern`` that Python's ``re`` and PostgreSQL's regular
    expressions read differently and the PostgreSQL side does not translate
    (``search_postgres.to_postgres`` does ``\\b``, ``\\B`` and ``\\xHH``), or None."""
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == "\\":
            if pattern.startswith("N{", i + 1):
                return "a named character (\\N{…})"
            i += 2
            continue
        if pattern[i] == "[":
            j, end = set_span(pattern, i)
            while j < end:
                if pattern[j] == "\\":
                    if pattern.startswith("N{", j + 1):
                        return "a named character (\\N{…})"
                    j += 2
                    continue
                if pattern.startswith(("[:", "[=", "[."), j):
                    return f"a POSIX bracket expression ({pattern[j : j + 2]}…)"
                j += 1
            i = end + 1
            continue
        if pattern.startswith("(?", i) and not pattern.startswith(_PORTABLE_GROUPS, i + 2):
            return f"the group {pattern[i : i + 3]}… (only (?:, (?=, (?!, (?<= and (?<! are taken)"
        i += 1
    return None


_OPERATOR = re.compile(r"==|!=|<=|>=|<|>|~")
_OPERATOR_CHARS = set("=!<>~")


def parse_filter(expression: str, *, where: str = "property") -> Filter:
    """``path``, or ``path<op>value`` with op one of ``== != < <= > >= ~``."""
    match = _OPERATOR.search(expression)
    first_operator_char = next((i for i, c in enumerate(expression) if c in _OPERATOR_CHARS), None)
    if first_operator_char is None:
        return Filter(parse_path(expression, where=where), Op.EXISTS)
    if match is None or match.start() != first_operator_char:
        bad = expression[first_operator_char : first_operator_char + 2]
        raise BadRequest(
            f"{where}: unknown operator in {expression!r} near {bad!r}; use one of "
            "==, !=, <, <=, >, >=, ~",
            pointer=where,
        )
    path = parse_path(expression[: match.start()], where=where)
    op = Op(match.group())
    value = expression[match.end() :]
    if (op is not Op.MATCH and value[:1] in ("=", "<", ">", "~")) or (
        op is Op.EQ and value[:1] == "!"
    ):
        raise BadRequest(
            f"{where}: unknown operator {op.value + value[:1]!r} in {expression!r}", pointer=where
        )
    return Filter(path, op, _literal(path, op, value, where=where))


# -- sorting and cursors -------------------------------------------------------------


def parse_sort_path(text: str, *, where: str = "orderby") -> Path:
    """A sort key's property: as :func:`parse_path`, or an instance property by its bare
    name (``xdm:name`` for ``_instance.xdm:name``). A bare name carries a namespace prefix
    other than ``repo:`` (the envelope's), so a mistyped envelope name is not mistaken for one.
    """
    name = text.strip()
    head = name.split(".", 1)[0]
    if name in ENVELOPE or head == INSTANCE_PREFIX:
        return parse_path(name, where=where)
    prefix, colon, _ = head.partition(":")
    if not colon or not prefix or prefix == "repo":
        known = ", ".join(ENVELOPE)
        raise BadRequest(
            f"{where}: unknown property {name!r}; name an envelope property ({known}) or an "
            "instance property such as xdm:name or _instance.xdm:name",
            pointer=where,
        )
    return parse_path(f"{INSTANCE_PREFIX}.{name}", where=where)


def parse_order(text: str, *, where: str = "orderby") -> tuple[SortKey, ...]:
    """``-repo:createdDate,xdm:name``; ``instanceId`` is appended when missing."""
    keys: list[SortKey] = []
    for item in text.split(","):
        # A literal "+" in a query string decodes to a space: both mean ascending.
        stripped = item.strip()
        if not stripped:
            raise BadRequest(f"{where}: empty sort key in {text!r}", pointer=where)
        descending = stripped.startswith("-")
        name = stripped[1:] if stripped[:1] in ("+", "-") else stripped
        path = parse_sort_path(name, where=where)
        if any(key.path == path for key in keys):
            raise BadRequest(f"{where}: {path.text} is named twice", pointer=where)
        keys.append(SortKey(path, descending))
        if path == INSTANCE_ID:
            break  # instanceId is unique: later keys could never matter
    if len(keys) > MAX_SORT_KEYS:
        raise BadRequest(f"{where}: at most {MAX_SORT_KEYS} sort keys", pointer=where)
    if keys[-1].path != INSTANCE_ID:
        keys.append(SortKey(INSTANCE_ID))
    return tuple(keys)


def _escape_part(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,")


def _split_parts(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append(next(chars, "\\"))
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def format_cursor(order: Sequence[SortKey], values: Sequence[Any]) -> str:
    """The ``start`` value naming one item: its sort values, comma-separated (spec §5.1).

    Dates are epoch milliseconds; text is as is (``,`` and ``\\`` escaped with ``\\``);
    values of instance properties are JSON.
    """
    parts: list[str] = []
    for key, value in zip(order, values, strict=True):
        kind = key.path.kind
        if kind in (Kind.DATE, Kind.INT):
            parts.append(str(int(value)))
        elif kind is Kind.TEXT:
            parts.append(_escape_part(str(value)))
        else:
            parts.append(_escape_part(_json_text(value)))
    return ",".join(parts)


def _json_text(value: Any) -> str:
    """A sort value's JSON text. PostgreSQL's jsonb writes a stored number without an
    exponent (``1e30`` comes back as 1 followed by 30 zeros), which Python reads as an
    integer past the 64 bits orjson writes: that one is written as Python does."""
    if type(value) is int and not -(2**63) <= value < 2**64:
        return str(value)
    return orjson.dumps(value).decode()


def parse_cursor(text: str, order: Sequence[SortKey], *, where: str = "start") -> tuple[Any, ...]:
    parts = _split_parts(text)
    if len(parts) != len(order):
        names = ",".join(key.path.text for key in order)
        raise BadRequest(
            f"{where}: the cursor has {len(parts)} value(s) but the order ({names}) needs "
            f"{len(order)}; follow the next link as given",
            pointer=where,
        )
    values: list[Any] = []
    for key, part in zip(order, parts, strict=True):
        kind = key.path.kind
        if kind in (Kind.DATE, Kind.INT):
            if not re.fullmatch(r"-?\d{1,18}", part):
                raise BadRequest(
                    f"{where}: {part!r} is not an integer for {key.path.text}", pointer=where
                )
            values.append(int(part))
        elif kind is Kind.TEXT:
            values.append(part)
        else:
            try:
                value = orjson.loads(part)
            except orjson.JSONDecodeError:
                raise BadRequest(f"{where}: {part!r} is not a JSON value", pointer=where) from None
            if isinstance(value, dict | list):
                raise BadRequest(f"{where}: {part!r} is not a scalar", pointer=where)
            values.append(value)
    return tuple(values)


# -- full-text query -----------------------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+")


def tokens(text: str) -> list[str]:
    """Lower-case letter/digit runs with accents removed (as SQLite FTS5 unicode61 does)."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _TOKEN.findall(stripped.casefold())


def parse_text(q: str, *, where: str = "q") -> tuple[Term, ...]:
    """Whitespace-separated terms; ``"…"`` a phrase; a trailing ``*`` a prefix; ``\\`` escapes."""
    if len(q) > MAX_Q_LENGTH:
        raise BadRequest(f"{where}: longer than {MAX_Q_LENGTH} characters", pointer=where)
    raw_terms: list[tuple[str, bool, bool]] = []  # (text, quoted, prefix)
    current: list[str] = []
    i, n = 0, len(q)

    def flush(prefix: bool = False) -> None:
        if current:
            raw_terms.append(("".join(current), False, prefix))
            current.clear()

    while i < n:
        char = q[i]
        if char == "\\":
            if i + 1 < n:
                current.append(q[i + 1])
            i += 2
        elif char == '"':
            flush()
            end = i + 1
            phrase: list[str] = []
            while end < n and q[end] != '"':
                if q[end] == "\\" and end + 1 < n:
                    end += 1
                phrase.append(q[end])
                end += 1
            if end >= n:
                raise BadRequest(f"{where}: a quoted phrase is not closed", pointer=where)
            prefix = end + 1 < n and q[end + 1] == "*"
            raw_terms.append(("".join(phrase), True, prefix))
            i = end + (2 if prefix else 1)
        elif char == "*" and (i + 1 == n or q[i + 1].isspace()):
            flush(prefix=bool(current))
            i += 1
        elif char.isspace():
            flush()
            i += 1
        else:
            current.append(char)
            i += 1
    flush()
    terms: list[Term] = []
    for text, quoted, prefix in raw_terms:
        found = tuple(tokens(text))
        if not found:
            continue
        if prefix:
            kind = TermKind.PREFIX
        elif quoted or len(found) > 1:
            kind = TermKind.PHRASE
        else:
            kind = TermKind.WORD
        terms.append(Term(kind, found))
    if not terms:
        raise BadRequest(f"{where}: {q!r} has no letters or digits to search for", pointer=where)
    if len(terms) > MAX_Q_TERMS:
        raise BadRequest(f"{where}: at most {MAX_Q_TERMS} terms", pointer=where)
    return tuple(dict.fromkeys(terms))


# -- the whole query -----------------------------------------------------------------

_KNOWN = {"schema", "property", "id", "name", "orderby", "start", "limit", "q", "qop", "field"}


def single(params: Mapping[str, list[str]], key: str) -> str | None:
    """The one value of a parameter that may appear once (twice is a 400)."""
    values = params.get(key, [])
    if len(values) > 1:
        raise BadRequest(f"{key} is given {len(values)} times; give it once", pointer=key)
    return values[0] if values else None


def _wildcard(text: str) -> bool:
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "*?":
            return True
    return False


def unescape_name(text: str) -> str:
    """A ``name`` without wildcards, its ``\\`` escapes removed."""
    return re.sub(r"\\(.)", r"\1", text)


def parse_limit(text: str | None) -> int:
    """``limit``: 1 to :data:`MAX_LIMIT`, :data:`DEFAULT_LIMIT` when absent."""
    if text is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"\s*\+?\d{1,9}\s*", text):
        raise BadRequest(f"limit must be a positive integer, not {text!r}", pointer="limit")
    limit = int(text)
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}, not {limit}", pointer="limit")
    return limit


def parse_query(pairs: Iterable[tuple[str, str]]) -> ListQuery:
    """Validate the query parameters of a list or search request.

    Parameter names are matched case-insensitively (``orderBy`` and ``orderby`` both
    appear in Adobe's pages); unknown parameters are ignored, and so is an empty value
    (``name=``): Adobe's Postman collections send every parameter, filled in or not.
    """
    params: dict[str, list[str]] = {}
    for key, value in pairs:
        lowered = key.lower()
        if lowered in _KNOWN and value:
            params.setdefault(lowered, []).append(value)
    schema_text = single(params, "schema")
    if schema_text is None or not schema_text.strip():
        raise BadRequest(
            "schema is required, e.g. schema=https://ns.adobe.com/experience/offer-management/"
            "offer-placement;version=0.4",
            pointer="schema",
        )
    try:
        schema = parse_schema_ref(schema_text, where="schema")
    except BadRequest as exc:
        raise BadRequest(exc.detail, pointer="schema") from None

    expressions = params.get("property", [])
    if len(expressions) > MAX_FILTERS:
        raise BadRequest(f"at most {MAX_FILTERS} property filters", pointer="property")
    filters = tuple(parse_filter(e) for e in expressions)

    ids = tuple(dict.fromkeys(params.get("id", [])))
    if len(ids) > MAX_IDS:
        raise BadRequest(f"at most {MAX_IDS} id values", pointer="id")
    name = single(params, "name")
    if ids and name is not None:
        raise BadRequest("id and name cannot be used together", pointer="name")
    if name is not None and len(name) > MAX_VALUE_LENGTH:
        raise BadRequest(f"name is longer than {MAX_VALUE_LENGTH} characters", pointer="name")
    wildcard = name is not None and _wildcard(name)
    if name is not None and not wildcard:
        name = unescape_name(name)

    order_text = single(params, "orderby")
    order = parse_order(order_text) if order_text is not None else (SortKey(INSTANCE_ID),)

    start_text = single(params, "start")
    start = parse_cursor(start_text, order) if start_text is not None else None

    limit = parse_limit(single(params, "limit"))

    text: TextQuery | None = None
    q = single(params, "q")
    qop = single(params, "qop")
    if qop is not None and qop.strip().upper() not in ("AND", "OR"):
        raise BadRequest(f"qop must be AND or OR, not {qop!r}", pointer="qop")
    fields: list[Path] = []
    for value in params.get("field", []):
        for item in value.split(","):
            if item.strip():
                path = parse_path(item, where="field")
                if path.envelope or path.text == INSTANCE_PREFIX:
                    raise BadRequest(
                        f"field: {item!r} is not searchable; name a path into the instance "
                        "such as _instance.xdm:name",
                        pointer="field",
                    )
                fields.append(path)
    if len(fields) > MAX_FIELDS:
        raise BadRequest(f"at most {MAX_FIELDS} fields", pointer="field")
    if q is not None and q.strip():
        text = TextQuery(
            terms=parse_text(q),
            require_all=(qop or "OR").strip().upper() == "AND",
            fields=tuple(dict.fromkeys(fields)),
        )
    return ListQuery(
        schema=schema,
        filters=filters,
        ids=ids,
        name=name,
        name_wildcard=wildcard,
        text=text,
        order=order,
        ordered_by_client=order_text is not None,
        start=start,
        limit=limit,
    )


# -- evaluating a filter on a document (the home document's few containers) -----------


def values_at(document: Any, parts: Sequence[str]) -> list[Any]:
    """Every value at ``parts``, arrays along the way (and at the end) flattened."""
    found: list[Any] = []

    def walk(node: Any, depth: int) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, depth)
            return
        if depth == len(parts):
            found.append(node)
            return
        if isinstance(node, dict) and parts[depth] in node:
            walk(node[parts[depth]], depth + 1)

    def present(node: Any, depth: int) -> bool:
        if depth == len(parts):
            return True
        if isinstance(node, list):
            return any(present(item, depth) for item in node)
        return (
            isinstance(node, dict)
            and parts[depth] in node
            and present(node[parts[depth]], depth + 1)
        )

    if not present(document, 0):
        return []
    walk(document, 0)
    return found or [None]


def _compare(op: Op, left: Any, right: Any) -> bool:
    if op is Op.EQ:
        return bool(left == right)
    if op is Op.LT:
        return bool(left < right)
    if op is Op.LE:
        return bool(left <= right)
    if op is Op.GT:
        return bool(left > right)
    return bool(left >= right)


def value_matches(op: Op, literal: Literal, value: Any) -> bool:
    """One stored scalar against a literal, by the value's JSON type (docs/api.md)."""
    if isinstance(value, bool):
        return _compare(op, "true" if value else "false", literal.text)
    if isinstance(value, int | float):
        return literal.number is not None and _compare(op, float(value), literal.number)
    if isinstance(value, str):
        if literal.instant_us is not None:
            instant = as_instant(value)
            if instant is not None:
                return _compare(op, instant, literal.instant_us)
        return _compare(op, value, literal.text)
    return False


def matches(flt: Filter, document: Mapping[str, Any]) -> bool:
    """Whether a HAL document (envelope + ``_instance``) passes ``flt``."""
    kept = _matches(flt, document)
    return not kept if flt.negated else kept


def _matches(flt: Filter, document: Mapping[str, Any]) -> bool:
    if flt.path.envelope:
        candidates = [document[flt.path.envelope]] if flt.path.envelope in document else []
        if flt.path.kind is Kind.DATE:
            candidates = [as_instant(c) for c in candidates if isinstance(c, str)]
            assert flt.literal is None or flt.literal.instant_us is not None
            if flt.op is Op.EXISTS:
                return bool(candidates)
            lit = flt.literal
            assert lit is not None
            if flt.op is Op.NE:
                return bool(candidates) and all(c != lit.instant_us for c in candidates)
            return any(c is not None and _compare(flt.op, c, lit.instant_us) for c in candidates)
    else:
        candidates = (
            values_at(document.get("_instance"), flt.path.parts) if "_instance" in document else []
        )
    if flt.op is Op.EXISTS:
        return bool(candidates)
    literal = flt.literal
    assert literal is not None
    scalars = [c for c in candidates if isinstance(c, str | int | float | bool)]
    if flt.op is Op.MATCH:
        pattern = compiled_pattern(literal.text)
        return any(isinstance(c, str) and pattern.fullmatch(c) is not None for c in scalars)
    if flt.op is Op.NE:
        return bool(scalars) and not any(value_matches(Op.EQ, literal, c) for c in scalars)
    return any(value_matches(flt.op, literal, c) for c in scalars)


#: Backtracking steps one value's match may take at worst: well under a second of
#: Python's ``re``, which holds the interpreter (every request of the process waits) while
#: it runs, and cannot be stopped. ``REGEX_BUDGET_SECONDS`` (``storage/search.py``) bounds
#: the whole request, but only between values.
REGEX_VALUE_STEPS = 20_000_000
#: A pattern's last element that never gives back what it took: ``.*`` or ``.+`` (every
#: character matches them, ``re.DOTALL``) at the end of a whole-value match.
_GREEDY_TAIL = re.compile(r"(?<!\\)\.[*+]\Z")


class BoundedPattern:
    """A compiled pattern that runs only on values short enough for its worst case.

    Repeats in sequence backtrack polynomially: a whole-value match of a pattern with
    ``r`` repeats (``a*a*c``) can try every way to split the value in ``r`` parts, about
    ``n**r / r!`` steps, times two for each optional part. A value longer than
    :attr:`max_text` is a 400 (through SQLite: its function's error, the request's
    "make it more specific"), never a silent mismatch; a pattern of one repeat, or whose
    only other repeat is a final ``.*``, runs on any value (linear)."""

    __slots__ = ("max_text", "pattern")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.max_text = _max_text(pattern.pattern)

    def fullmatch(self, value: str) -> re.Match[str] | None:
        if len(value) > self.max_text:
            raise BadRequest(
                f"property: the regular expression {self.pattern.pattern!r} could take"
                f" too long on a value of {len(value):,} characters (at most"
                f" {self.max_text:,} for its repeats); make it more specific",
                pointer="property",
            )
        return self.pattern.fullmatch(value)


def _max_text(pattern: str) -> int:
    """The longest value ``pattern`` may be matched against (:class:`BoundedPattern`)."""
    repeated, optional = regex_repeats(pattern)
    if _GREEDY_TAIL.search(pattern):
        repeated -= 1
    if repeated <= 1 and not optional:
        return 2**63
    exponent = max(repeated, 1)
    budget = REGEX_VALUE_STEPS * math.factorial(exponent) / 2**optional
    return max(int(budget ** (1 / exponent)), 1)


_PATTERNS: dict[str, BoundedPattern] = {}


def compiled_pattern(pattern: str) -> BoundedPattern:
    """The case-insensitive compiled form of a pattern that passed :func:`check_pattern`."""
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        if len(_PATTERNS) > 512:
            _PATTERNS.clear()
        compiled = _PATTERNS[pattern] = BoundedPattern(
            re.compile(pattern, re.IGNORECASE | re.DOTALL)
        )
    return compiled
