"""Reading a Decisions API request body (decisioning-api.md §2.3, the 2020 form, and the
2019 form of §2.1).

Type and shape errors are 422s with the JSON pointer of the field; what only the catalog
can judge (unknown ids, item counts, guardrails) the engine checks. The 2019 form names
activities without placements: :func:`parse_2019` finds each one's placement in the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nextoffer.engine import Catalog, PropositionRequest
from nextoffer.engine.request import check_item_count
from nextoffer.errors import BadRequest, NotFound, Unprocessable
from nextoffer.service.context_data import parse_context
from nextoffer.service.decisions import DecisionCall
from nextoffer.service.identities import parse_identity_map

#: ``xdm:includeMetadata`` values Adobe documents, per object.
METADATA = {
    "xdm:activity": frozenset({"name"}),
    "xdm:option": frozenset({"name", "characteristics", "priority"}),
    "xdm:placement": frozenset({"name", "channel", "componentType"}),
}
#: Activities in one 2019 request ("up to 30 activities at once").
MAX_ACTIVITIES = 30


#: Not frozen: made once per decision, where ``frozen=True``'s ``__init__`` (one
#: ``object.__setattr__`` call per field) shows in the route's CPU (docs/benchmarks.md);
#: nothing changes one after it is made.
@dataclass(slots=True)
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


def _propositions(value: Any) -> tuple[PropositionRequest, ...]:
    pointer = "/xdm:propositionRequests"
    if not isinstance(value, list) or not value:
        raise Unprocessable("xdm:propositionRequests must be a non-empty array", pointer=pointer)
    found = []
    # Pointers are made only for an error: the checks run on every decision.
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise Unprocessable(
                "a proposition request must be an object", pointer=f"{pointer}/{index}"
            )
        activity: Any = item.get("xdm:activityId")
        placement: Any = item.get("xdm:placementId")
        count: Any = item.get("xdm:itemCount", 1)
        if (
            activity.__class__ is not str
            or not activity
            or placement.__class__ is not str
            or not placement
            or count.__class__ is not int
        ):
            _check_proposition(item, f"{pointer}/{index}")
        found.append(PropositionRequest(activity, placement, count))
    return tuple(found)


def _check_proposition(item: dict[str, Any], where: str) -> None:
    """The 422 for the first bad member of a proposition request (the slow path: a plain
    ``str`` or ``int`` passed the quick check already; a subclass of one passes here)."""
    activity = item.get("xdm:activityId")
    if not isinstance(activity, str) or not activity:
        raise Unprocessable(
            "xdm:activityId is required (a decision @id)", pointer=f"{where}/xdm:activityId"
        )
    placement = item.get("xdm:placementId")
    if not isinstance(placement, str) or not placement:
        raise Unprocessable(
            "xdm:placementId is required (a placement @id)", pointer=f"{where}/xdm:placementId"
        )
    check_item_count(item.get("xdm:itemCount", 1), f"{where}/xdm:itemCount")


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
        allowed = METADATA.get(key)
        if allowed is None:
            raise Unprocessable(
                f"unknown metadata object {key!r}; use one of {sorted(METADATA)}",
                pointer=f"{pointer}/xdm:includeMetadata/{key}",
            )
        if not _names_in(names, allowed):
            raise Unprocessable(
                f"{key} metadata may name only {sorted(allowed)}",
                pointer=f"{pointer}/xdm:includeMetadata/{key}",
            )
        metadata[key] = frozenset(names)
    return ResponseFormat(
        include_content=_bool(value.get("xdm:includeContent"), _INCLUDE_CONTENT),
        metadata=metadata,
        explain=_bool(value.get("nextoffer:explain"), _EXPLAIN),
    )


_INCLUDE_CONTENT = "/xdm:responseFormat/xdm:includeContent"
_EXPLAIN = "/xdm:responseFormat/nextoffer:explain"


def _names_in(names: Any, allowed: frozenset[str]) -> bool:
    """Whether ``names`` is a list of names ``allowed`` holds."""
    if not isinstance(names, list):
        return False
    try:
        return allowed.issuperset(names)
    except TypeError:  # an unhashable member (an object, a list): not a name
        return False


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
    response_format = _response_format(body.get("xdm:responseFormat"))
    across_activities, across_placements = _duplicates(body)
    call = DecisionCall(
        propositions=propositions,
        identities=identities,
        context=parse_context(profile.get("xdm:contextData"), "/xdm:profiles/0/xdm:contextData"),
        allow_duplicates_across_activities=across_activities,
        allow_duplicates_across_placements=across_placements,
        dry_run=_bool(body.get("xdm:dryRun"), "/xdm:dryRun"),
        explain=response_format.explain,
        decision_request_id=request_id,
    )
    return call, response_format


def _duplicates(body: dict[str, Any]) -> tuple[bool, bool]:
    """``xdm:allowDuplicatePropositions``: across activities, across placements."""
    duplicates = body.get("xdm:allowDuplicatePropositions")
    if not duplicates:  # absent (or another empty value): neither allowed
        return False, False
    if not isinstance(duplicates, dict):
        raise Unprocessable("must be an object", pointer="/xdm:allowDuplicatePropositions")
    return (
        _bool(
            duplicates.get("xdm:acrossActivities"),
            "/xdm:allowDuplicatePropositions/xdm:acrossActivities",
        ),
        _bool(
            duplicates.get("xdm:acrossPlacements"),
            "/xdm:allowDuplicatePropositions/xdm:acrossPlacements",
        ),
    )


def is_2019(body: Any) -> bool:
    """The 2019 form (``decision-request;version=0.9``) names ``xdm:offerActivities``."""
    return (
        isinstance(body, dict)
        and "xdm:offerActivities" in body
        and "xdm:propositionRequests" not in body
    )


def _placement_of(catalog: Catalog, activity_id: str, pointer: str) -> str:
    """The one placement a 2019 request decides for: the activity's own."""
    decision = catalog.decisions.get(activity_id)
    if decision is None:
        raise NotFound(f"no decision {activity_id!r}", pointer=pointer)
    if decision.status != "live":
        raise Unprocessable(
            f"decision {activity_id} is {decision.status or 'without status'}, not live",
            pointer=pointer,
        )
    placements = {p for criterion in decision.criteria for p in criterion.placements}
    if len(placements) != 1 or any(not c.placements for c in decision.criteria):
        raise Unprocessable(
            f"decision {activity_id} does not name exactly one placement, so a request "
            "without placements cannot decide for it; send xdm:propositionRequests with an "
            "xdm:placementId instead",
            pointer=pointer,
        )
    return placements.pop()


def parse_2019(body: dict[str, Any], catalog: Catalog) -> tuple[DecisionCall, ResponseFormat]:
    """The 2019 request: activities, a top-level identity map and context data.

    Each activity is decided for its placement; the answer is the v1.0 response with the
    options' content (the 2019 request has no ``xdm:responseFormat`` to ask for it).
    """
    pointer = "/xdm:offerActivities"
    items = body["xdm:offerActivities"]
    if not isinstance(items, list) or not items:
        raise Unprocessable("xdm:offerActivities must be a non-empty array", pointer=pointer)
    if len(items) > MAX_ACTIVITIES:
        raise Unprocessable(f"at most {MAX_ACTIVITIES} activities", pointer=pointer)
    activities = []
    for index, item in enumerate(items):
        activity = item.get("xdm:offerActivity") if isinstance(item, dict) else None
        if not isinstance(activity, str) or not activity:
            raise Unprocessable(
                "xdm:offerActivity is required (a decision @id)",
                pointer=f"{pointer}/{index}/xdm:offerActivity",
            )
        activities.append(activity)
    identities = parse_identity_map(body.get("xdm:identityMap"), pointer="/xdm:identityMap")
    context = parse_context(body.get("xdm:contextData"), "/xdm:contextData")
    # The 2019 arbitration is across activities only (it has no xdm:acrossPlacements).
    across_activities, _ = _duplicates(body)
    dry_run = _bool(body.get("xdm:dryRun"), "/xdm:dryRun")
    propositions = tuple(
        PropositionRequest(
            activity,
            _placement_of(catalog, activity, f"{pointer}/{index}/xdm:offerActivity"),
        )
        for index, activity in enumerate(activities)
    )
    call = DecisionCall(
        propositions=propositions,
        identities=identities,
        context=context,
        allow_duplicates_across_activities=across_activities,
        allow_duplicates_across_placements=True,
        dry_run=dry_run,
    )
    return call, ResponseFormat(include_content=True)
