"""``pql/json`` (pql.md §11) → the same AST the text parser builds.

Node types: ``fnApply`` (``fnName`` + ``params``), ``fieldLookup`` (``fieldName`` [+
``object``]), ``literal`` (``value`` [+ ``literalType``]), ``parameterReference``
(``position``), ``varRef`` (``varName``) and ``fnCreate`` (lambda). Text stored under a
``pql/json`` label (as some Adobe samples do) is sniffed and parsed as text.
"""

from __future__ import annotations

import json
from typing import Any

from . import ast as A
from . import messages as msg
from .functions import FUNCTIONS, METHODS
from .parser import check_height, parse

_BINARY = {
    "=": "=",
    "!=": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
    "in": "in",
    "notin": "notIn",
    "like": "like",
    "matches": "matches",
    "+": "+",
    "-": "-",
    "*": "*",
    "/": "/",
    "%": "%",
}
_MAX_DEPTH = 100


def parse_json(source: str | dict[str, Any]) -> A.Node:
    """Parse a ``pql/json`` document (a JSON string or an already-decoded object)."""
    text = source if isinstance(source, str) else None
    if isinstance(source, str):
        if not source.lstrip().startswith("{"):
            return parse(source)
        try:
            doc = json.loads(source)
        except (ValueError, RecursionError) as exc:
            raise msg.fail(msg.JSON_INVALID.format(reason=exc), None, text) from None
    else:
        doc = source
    tree = _node(doc, text, 0)
    check_height(tree, text)
    return tree


def _bad(reason: str, text: str | None) -> Exception:
    return msg.fail(msg.JSON_NODE.format(reason=reason), None, text)


def _node(doc: Any, text: str | None, depth: int) -> A.Node:
    if depth > _MAX_DEPTH:
        raise _bad(f"nested more than {_MAX_DEPTH} levels", text)
    if not isinstance(doc, dict):
        raise _bad("expected an object with a nodeType", text)
    kind = doc.get("nodeType")
    sub = depth + 1
    if kind == "literal":
        return _literal(doc.get("value"), doc.get("literalType"), text)
    if kind == "fieldLookup":
        name = doc.get("fieldName")
        if not isinstance(name, str) or not name:
            raise _bad("fieldLookup needs a fieldName", text)
        if doc.get("object") is None:
            return A.Name(name)
        return A.Field(_node(doc["object"], text, sub), name)
    if kind == "parameterReference":
        position = doc.get("position")
        if not isinstance(position, int) or isinstance(position, bool):
            raise _bad("parameterReference needs an integer position", text)
        return A.Param(position)
    if kind == "varRef":
        name = doc.get("varName")
        if not isinstance(name, str) or not name:
            raise _bad("varRef needs a varName", text)
        return A.Name(name)
    if kind == "fnCreate":
        params = doc.get("params") or []
        names = [p.get("varName") for p in params if isinstance(p, dict)]
        checked = [n for n in names if isinstance(n, str) and n]
        if len(checked) != len(params):
            raise _bad("fnCreate params need varName", text)
        return A.Lambda(tuple(checked), _node(doc.get("body"), text, sub))
    if kind == "fnApply":
        return _apply(doc, text, sub)
    raise _bad(f"unsupported nodeType {kind!r}", text)


def _literal(value: Any, literal_type: Any, text: str | None) -> A.Node:
    lt = str(literal_type).lower() if literal_type is not None else ""
    if lt == "xdmobject":
        if value == "profile":
            return A.Name("profile")
        raise _bad(f"unknown XDMObject {value!r}", text)
    if lt in ("integer", "long", "int") and isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise _bad(f"{value!r} is not an integer", text) from None
    if lt in ("double", "number", "float") and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _bad(f"{value!r} is not a number", text) from None
    if isinstance(value, list):
        return A.ListLit(tuple(_literal(v, None, text) for v in value))
    if isinstance(value, dict):
        return A.ObjectLit(tuple((str(k), _literal(v, None, text)) for k, v in value.items()))
    if value is None or isinstance(value, bool | int | float | str):
        return A.Literal(value)
    raise _bad("unsupported literal value", text)


def _apply(doc: dict[str, Any], text: str | None, depth: int) -> A.Node:
    name = doc.get("fnName")
    params = doc.get("params") or []
    if not isinstance(params, list):
        raise _bad("fnApply params must be an array", text)
    if not isinstance(name, str):
        raise _bad("fnApply needs a fnName", text)
    args = tuple(_node(p, text, depth) for p in params)
    lowered = name.lower()
    if lowered in ("and", "or"):
        if not args:
            raise _bad(f"{name!r} needs operands", text)
        return args[0] if len(args) == 1 else A.BoolOp(lowered, args)
    if lowered in ("not", "!"):
        if len(args) != 1:
            raise _bad(f"{name!r} takes one operand", text)
        return A.Unary("not", args[0])
    if lowered in _BINARY:
        if len(args) != 2:
            raise _bad(f"{name!r} takes two operands", text)
        return A.Binary(_BINARY[lowered], args[0], args[1])
    if name in FUNCTIONS:
        return A.Call(name, args)
    if name in METHODS:
        if not args:
            raise _bad(f"{name!r} needs a receiver", text)
        return A.Method(args[0], name, args[1:])
    raise msg.fail(msg.UNKNOWN_FUNCTION.format(name=name), None, text)
