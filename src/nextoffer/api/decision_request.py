"""Reading a Decisions API request body (decisioning-api.md §2.3, and the 2020 form).

Type and shape errors are 422s with the JSON pointer of the field; what only the catalog
can judge (unknown ids, item counts, guardrails) the engine checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nextoffer.engine import PropositionRequest
from nextoffer.errors import BadRequest, Unprocessable
from nextoffer.service.decisions import DecisionCall
from nextoffer.service.identities import parse_identity_map

#: ``xdm:includeMetadata`` values Adobe documents, per object.
METADATA = {
    "xdm:activity": frozenset({"name"}),
    "xdm:option": frozenset({"name", "characteristics", "priority"}),
    "xdm:placement": frozenset({"name", "channel", "componentType"}),
}
MAX_CONTEXT_ITEMS = 30


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    include_content: bool = False
    metadata: dict[str, frozenset[str]] = field(default_factory=dict)
    explain: bool = False


def _bool(value: Any, pointer: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Unprocessable("must be true or false", pointer=pointer)
    return value


def _strip_xdm(value: Any) -> Any:
    """Context data as PQL reads it: ``xdm:`` prefixes removed from keys, at every level."""
    if isinstance(value, dict):
        return {(k[4:] if k.startswith("xdm:") else k): _strip_xdm(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_xdm(v) for v in value]
    return value


def _propositions(value: Any) -> tuple[PropositionRequest, ...]:
    pointer = "/xdm:propositionRequests"
    if not isinstance(value, list) or not value:
        raise Unprocessable("xdm:propositionRequests must be a non-empty array", pointer=pointer)
    found = []
    for index, item in enumerate(value):
        where = f"{pointer}/{index}"
        if not isinstance(item, dict):
            raise Unprocessable("a proposition request must be an object", pointer=where)
        activity = item.get("xdm:activityId")
        placement = item.get("xdm:placementId")
        if not isinstance(activity, str) or not activity:
            raise Unprocessable(
                "xdm:activityId is required (a decision @id)", pointer=f"{where}/xdm:activityId"
            )
        if not isinstance(placement, str) or not placement:
            raise Unprocessable(
                "xdm:placementId is required (a placement @id)", pointer=f"{where}/xdm:placementId"
            )
        count = item.get("xdm:itemCount", 1)
        if isinstance(count, bool) or not isinstance(count, int):
            raise Unprocessable(
                "xdm:itemCount must be an integer from 1 to 30", pointer=f"{where}/xdm:itemCount"
            )
        found.append(PropositionRequest(activity, placement, count))
    return tuple(found)


def _context(value: Any, pointer: str) -> dict[str, Any]:
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
        context[item["@type"]] = _strip_xdm(data)
    return context


def _response_format(value: Any) -> ResponseFormat:
    pointer = "/xdm:responseFormat"
    if value is None:
        return ResponseFormat()
    if not isinstance(value, dict):
        raise Unprocessable("xdm:responseFormat must be an object", pointer=pointer)
    metadata: dict[str, frozenset[str]] = {}
    requested = value.get("xdm:includeMetadata") or {}
    if not isinstance(requested, dict):
        raise Unprocessable(
            "xdm:includeMetadata must be an object", pointer=f"{pointer}/xdm:includeMetadata"
        )
    for key, names in requested.items():
        where = f"{pointer}/xdm:includeMetadata/{key}"
        allowed = METADATA.get(key)
        if allowed is None:
            raise Unprocessable(
                f"unknown metadata object {key!r}; use one of {sorted(METADATA)}", pointer=where
            )
        if not isinstance(names, list) or not all(
            isinstance(n, str) and n in allowed for n in names
        ):
            raise Unprocessable(f"{key} metadata may name only {sorted(allowed)}", pointer=where)
        metadata[key] = frozenset(names)
    return ResponseFormat(
        include_content=_bool(value.get("xdm:includeContent"), f"{pointer}/xdm:includeContent"),
        metadata=metadata,
        explain=_bool(value.get("nextoffer:explain"), f"{pointer}/nextoffer:explain"),
    )


def parse(body: Any) -> tuple[DecisionCall, ResponseFormat]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", pointer="/")
    propositions = _propositions(body.get("xdm:propositionRequests"))
    profiles = body.get("xdm:profiles")
    if not isinstance(profiles, list) or len(profiles) != 1 or not isinstance(profiles[0], dict):
        raise Unprocessable("xdm:profiles must hold exactly one profile", pointer="/xdm:profiles")
    profile = profiles[0]
    identities = parse_identity_map(
        profile.get("xdm:identityMap"), pointer="/xdm:profiles/0/xdm:identityMap"
    )
    request_id = profile.get("xdm:decisionRequestId")
    if request_id is not None and not isinstance(request_id, str):
        raise Unprocessable(
            "xdm:decisionRequestId must be a string",
            pointer="/xdm:profiles/0/xdm:decisionRequestId",
        )
    duplicates = body.get("xdm:allowDuplicatePropositions") or {}
    if not isinstance(duplicates, dict):
        raise Unprocessable("must be an object", pointer="/xdm:allowDuplicatePropositions")
    response_format = _response_format(body.get("xdm:responseFormat"))
    call = DecisionCall(
        propositions=propositions,
        identities=identities,
        context=_context(profile.get("xdm:contextData"), "/xdm:profiles/0/xdm:contextData"),
        allow_duplicates_across_activities=_bool(
            duplicates.get("xdm:acrossActivities"),
            "/xdm:allowDuplicatePropositions/xdm:acrossActivities",
        ),
        allow_duplicates_across_placements=_bool(
            duplicates.get("xdm:acrossPlacements"),
            "/xdm:allowDuplicatePropositions/xdm:acrossPlacements",
        ),
        dry_run=_bool(body.get("xdm:dryRun"), "/xdm:dryRun"),
        explain=response_format.explain,
        decision_request_id=request_id,
    )
    return call, response_format
