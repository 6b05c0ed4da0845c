"""Context data of a decision request (``xdm:contextData``, decisioning-api.md §2.3): the
items by their ``@type``, as PQL reads them. The API and the console read it the same way.
"""

from __future__ import annotations

from typing import Any

from nextoffer.errors import Unprocessable

MAX_CONTEXT_ITEMS = 30


def strip_xdm(value: Any) -> Any:
    """Context data as PQL reads it: ``xdm:`` prefixes removed from keys, at every level."""
    if isinstance(value, dict):
        return {(k[4:] if k.startswith("xdm:") else k): strip_xdm(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_xdm(v) for v in value]
    return value


def parse_context(value: Any, pointer: str) -> dict[str, Any]:
    """The items of ``xdm:contextData`` by ``@type``; a 422 naming the bad item."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise Unprocessable("xdm:contextData must be an array", pointer=pointer)
    if len(value) > MAX_CONTEXT_ITEMS:
        raise Unprocessable(f"at most {MAX_CONTEXT_ITEMS} context data items", pointer=pointer)
    context: dict[str, Any] = {}
    for index, item in enumerate(value):
        where = f"{pointer}/{index}"
        if not isinstance(item, dict) or not isinstance(item.get("@type"), str):
            raise Unprocessable("a context data item needs an @type (its schema)", pointer=where)
        data = item.get("xdm:data", {})
        if not isinstance(data, dict):
            raise Unprocessable("xdm:data must be an object", pointer=f"{where}/xdm:data")
        context[item["@type"]] = strip_xdm(data)
    return context
