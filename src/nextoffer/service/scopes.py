"""Decision scopes as the Edge Network receives them (decisioning-api.md §3).

A decision scope is the base64 of a UTF-8 JSON object naming an activity and a
placement, ``activityId``/``placementId`` or ``xdm:activityId``/``xdm:placementId``, with
an optional ``itemCount``. Anything that does not decode to a JSON object is not a
decision scope (the Web SDK's ``__view__``, Target's mbox names, surfaces): it gets no
proposition and no warning. A JSON object without a usable activity and placement is a
malformed scope (:class:`ScopeError`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from functools import lru_cache

import orjson

__all__ = ["MAX_ITEM_COUNT", "DecisionScope", "ScopeError", "decode_scope"]

MAX_ITEM_COUNT = 30


class ScopeError(ValueError):
    """A decision scope whose JSON does not name an activity and a placement."""


@dataclass(frozen=True, slots=True)
class DecisionScope:
    scope: str
    activity_id: str
    placement_id: str
    item_count: int = 1


def _member(data: dict[str, object], name: str) -> object:
    return data.get(name, data.get(f"xdm:{name}"))


@lru_cache(maxsize=4096)
def decode_scope(scope: str) -> DecisionScope | None:
    """The activity and placement ``scope`` names; ``None`` when it is not a decision
    scope; :class:`ScopeError` when it is one but malformed. Every visitor of a page
    sends the same scopes: decoded ones are kept (a malformed one is decoded each time)."""
    text = scope.strip()
    if not text or len(text) > 4096 or text.startswith("__"):
        return None
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    activity = _member(data, "activityId")
    placement = _member(data, "placementId")
    if not isinstance(activity, str) or not activity:
        raise ScopeError("the decision scope names no activityId (a decision @id)")
    if not isinstance(placement, str) or not placement:
        raise ScopeError("the decision scope names no placementId (a placement @id)")
    count = _member(data, "itemCount")
    if count is None:
        count = 1
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_ITEM_COUNT:
        raise ScopeError(f"itemCount must be an integer from 1 to {MAX_ITEM_COUNT}")
    return DecisionScope(scope, activity, placement, count)
