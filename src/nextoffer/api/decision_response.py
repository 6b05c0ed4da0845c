"""Writing a Decisions API response (decisioning-api.md §2.3) and the explain trace."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from nextoffer.api.decision_request import ResponseFormat
from nextoffer.engine import FallbackOption, ObjectRef, Option, Proposition, PropositionTrace
from nextoffer.service.decisions import DecisionOutcome


def first_component(components: tuple[Mapping[str, Any], ...]) -> dict[str, Any]:
    """The content of the first component of the representation (choice: docs/api.md)."""
    return dict(components[0]) if components else {}


_PLACEMENT_EXTRA = {"channel": "xdm:channel", "componentType": "xdm:componentType"}


def _ref(ref: ObjectRef, names: frozenset[str], extra: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"xdm:id": ref.at_id, "repo:etag": ref.etag}
    if not names:
        return out
    if "name" in names and ref.name is not None:
        out["xdm:name"] = ref.name
    for name, key in extra.items():
        if name in names and key in ref.body:
            out[key] = ref.body[key]
    return out


_NONE: frozenset[str] = frozenset()


def _option(
    option: Option | FallbackOption, fmt: ResponseFormat, names: frozenset[str]
) -> dict[str, Any]:
    """``names``: the option metadata ``fmt`` asks for."""
    out: dict[str, Any] = {"xdm:id": option.offer_id, "repo:etag": option.etag}
    if names:
        if "name" in names:
            name = option.name
            if name is not None:
                out["xdm:name"] = name
        if "characteristics" in names:
            out["xdm:characteristics"] = dict(option.characteristics)
        if "priority" in names and isinstance(option, Option):
            out["xdm:priority"] = option.priority
    if fmt.include_content:
        components = option.components
        if components:  # the first component's content (``first_component``), not copied
            out.update(components[0])
    if isinstance(option, Option) and option.score is not None:
        out["xdm:score"] = option.score
    return out


class _Serialised:
    """Options already serialised, by the option's identity and the format's choices.

    An option without a score is the same object for every decision of its snapshot
    (``engine.model.Offer.option``); an entry holds its option, so no other object can be
    given that id while the entry lives. Bounded in entries and in the bytes kept (an
    offer's content may be large): when either bound would be passed, everything goes and
    the current snapshot's options are serialised again as they come. The bytes kept are
    the JSON and what the held option pins (its body and representation, as JSON): an
    entry of a replaced snapshot keeps that offer's old body alive on its own, and without
    content the JSON is a few dozen bytes whatever the body's size. Nor are such entries
    left to wait for a bound: a new option of the same offer, placement and format (the
    offer's next snapshot) replaces the entry of the one before, which no decision asks
    for again.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: dict[
            tuple[int, frozenset[str], bool],
            tuple[Option | FallbackOption, orjson.Fragment, int],
        ] = {}
        #: The entry of each offer, placement and format's latest option.
        self._latest: dict[
            tuple[str, object, frozenset[str], bool], tuple[int, frozenset[str], bool]
        ] = {}
        self._bytes = 0

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def option(
        self, option: Option | FallbackOption, fmt: ResponseFormat, names: frozenset[str]
    ) -> dict[str, Any] | orjson.Fragment:
        """:func:`_option`, serialised once per option and format (a scored option, or
        one larger than the whole bound, each time)."""
        if isinstance(option, Option) and option.score is not None:
            return _option(option, fmt, names)
        key = (id(option), names, fmt.include_content)
        found = self._entries.get(key)
        if found is not None:
            return found[1]
        text = orjson.dumps(_option(option, fmt, names))
        fragment = orjson.Fragment(text)
        size = len(text) + _pinned(option)
        if size > self.max_bytes:
            return fragment
        representation = option.representation
        placement = representation.get("xdm:placement") if representation is not None else None
        slot = (option.offer_id, placement, names, fmt.include_content)
        before = self._entries.pop(self._latest.get(slot, key), None)
        if before is not None:
            self._bytes -= before[2]
        if len(self._entries) >= self.max_entries or self._bytes + size > self.max_bytes:
            self._entries.clear()
            self._latest.clear()
            self._bytes = 0
        self._entries[key] = (option, fragment, size)
        self._latest[slot] = key
        self._bytes += size
        return fragment


def _pinned(option: Option | FallbackOption) -> int:
    """The JSON size of what a kept ``option`` holds alive: its body and representation."""
    return len(orjson.dumps(option.body, default=dict)) + len(
        orjson.dumps(option.representation, default=dict)
    )


#: The process's serialised options: 4,096 of them, 16 MiB of JSON at most.
SERIALISED = _Serialised(max_entries=4096, max_bytes=16 * 1024 * 1024)


def trace_json(trace: PropositionTrace) -> dict[str, Any]:
    return {
        "candidates": [
            {
                key: value
                for key, value in (
                    ("offerId", c.offer_id),
                    ("reason", c.reason.value),
                    ("criterion", c.criterion),
                    ("detail", c.detail),
                    ("ruleId", c.rule_id),
                    ("counter", c.counter),
                    ("limit", c.limit),
                    ("rank", c.rank),
                    ("score", c.score),
                    ("priority", c.priority),
                    ("estimate", c.estimate),
                )
                if value is not None
            }
            for c in trace.candidates
        ],
        "fallbackReason": trace.fallback_reason.value if trace.fallback_reason else None,
        "criteriaGroups": [list(group) for group in trace.groups],
        **(
            {"rankingStrategy": trace.strategy, "explored": trace.explored}
            if trace.strategy is not None
            else {}
        ),
    }


OptionWriter = Callable[
    [Option | FallbackOption, ResponseFormat, frozenset[str]], dict[str, Any] | orjson.Fragment
]


def _proposition(
    proposition: Proposition, fmt: ResponseFormat, option: OptionWriter
) -> dict[str, Any]:
    metadata = fmt.metadata
    out: dict[str, Any] = {
        "xdm:activity": _ref(proposition.activity, metadata.get("xdm:activity", _NONE), {}),
        "xdm:placement": _ref(
            proposition.placement, metadata.get("xdm:placement", _NONE), _PLACEMENT_EXTRA
        ),
    }
    names = metadata.get("xdm:option", _NONE)
    if proposition.options:
        out["xdm:options"] = [option(o, fmt, names) for o in proposition.options]
    elif proposition.fallback is not None:
        out["xdm:fallback"] = option(proposition.fallback, fmt, names)
    if proposition.trace is not None:
        out["nextoffer:explain"] = trace_json(proposition.trace)
    return out


def response(
    outcome: DecisionOutcome,
    fmt: ResponseFormat,
    *,
    decision_request_id: str | None,
    compact: bool = True,
) -> dict[str, Any]:
    """The response body for orjson. ``compact``: options may be ``orjson.Fragment``
    values, serialised once per snapshot (they keep their own layout: pass ``False`` for
    plain dicts to indent or read)."""
    option = SERIALISED.option if compact else _option
    body: dict[str, Any] = {
        "xdm:propositionId": outcome.proposition_id,
        "xdm:propositions": [_proposition(p, fmt, option) for p in outcome.result.propositions],
        "ode:createDate": outcome.created_us // 1000,
    }
    if decision_request_id is not None:
        body["xdm:decisionRequestId"] = decision_request_id
    return body
