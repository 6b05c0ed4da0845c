"""What the service asks the engine to decide, and the checks that make it a 4xx.

The API layer parses Adobe's JSON into a :class:`DecisionRequest`; the engine checks what
only the catalog can tell (unknown ids, a placement the decision does not cover) and the
guardrails, raising :mod:`nextoffer.errors` with the JSON pointer of the offending field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nextoffer.engine.catalog import Catalog
from nextoffer.engine.model import Decision, Placement
from nextoffer.errors import NotFound, Unprocessable

#: Guardrails (decisioning-api.md §2.3, §8).
MAX_PROPOSITION_REQUESTS = 30
MAX_ITEM_COUNT = 30

_REQUESTS = "/xdm:propositionRequests"


# Made once (or a few times) per decision: not frozen, whose ``__init__`` calls
# ``object.__setattr__`` per field (docs/benchmarks.md); nothing changes one once made.
@dataclass(slots=True)
class PropositionRequest:
    """One decision scope: an activity (decision) and a placement, and how many options."""

    activity_id: str
    placement_id: str
    item_count: int = 1


@dataclass(slots=True)
class DecisionRequest:
    """A whole decision request for one profile."""

    propositions: tuple[PropositionRequest, ...]
    #: ``xdm:allowDuplicatePropositions.xdm:acrossActivities``: true lets two decisions
    #: propose the same offer.
    allow_duplicates_across_activities: bool = False
    #: ``xdm:allowDuplicatePropositions.xdm:acrossPlacements``: true lets two placements
    #: receive the same offer.
    allow_duplicates_across_placements: bool = False
    #: The profile as PQL reads it (``segmentMembership`` included).
    profile: Mapping[str, Any] = field(default_factory=dict)
    #: The profile's experience events (PQL ``xEvent``).
    events: Sequence[Mapping[str, Any]] = ()
    #: Context data keyed by schema ref (PQL ``@{schema}``), ``xdm:`` prefixes stripped.
    context: Mapping[str, Any] = field(default_factory=dict)
    #: Build a per-candidate trace for every proposition.
    explain: bool = False


def check_item_count(value: Any, pointer: str) -> int:
    """``xdm:itemCount`` as sent: an integer from 1 to :data:`MAX_ITEM_COUNT`, else a 422
    at ``pointer`` quoting it as JSON."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ITEM_COUNT:
        raise Unprocessable(
            f"xdm:itemCount must be an integer from 1 to {MAX_ITEM_COUNT},"
            f" got {json.dumps(value, default=str)}",
            pointer=pointer,
        )
    return value


def resolve(
    catalog: Catalog, request: DecisionRequest
) -> list[tuple[PropositionRequest, Decision, Placement]]:
    """Check ``request`` against the guardrails and the catalog; resolve its ids.

    Raises :class:`~nextoffer.errors.Unprocessable` for a request that breaks a guardrail
    or names a decision that is not ``live`` or does not cover the placement, and
    :class:`~nextoffer.errors.NotFound` for an unknown decision or placement.
    """
    count = len(request.propositions)
    if count == 0:
        raise Unprocessable("at least one proposition request is required", pointer=_REQUESTS)
    if count > MAX_PROPOSITION_REQUESTS:
        raise Unprocessable(
            f"at most {MAX_PROPOSITION_REQUESTS} proposition requests are allowed, got {count}",
            pointer=_REQUESTS,
        )
    resolved = []
    for index, wanted in enumerate(request.propositions):
        base = f"{_REQUESTS}/{index}"
        check_item_count(wanted.item_count, f"{base}/xdm:itemCount")
        decision = catalog.decisions.get(wanted.activity_id)
        if decision is None:
            raise NotFound(f"no decision {wanted.activity_id!r}", pointer=f"{base}/xdm:activityId")
        if decision.status != "live":
            raise Unprocessable(
                f"decision {wanted.activity_id} is {decision.status or 'without status'}, not live",
                pointer=f"{base}/xdm:activityId",
            )
        placement = catalog.placements.get(wanted.placement_id)
        if placement is None:
            raise NotFound(
                f"no placement {wanted.placement_id!r}", pointer=f"{base}/xdm:placementId"
            )
        if not decision.covers(wanted.placement_id):
            raise Unprocessable(
                f"decision {decision.at_id} has no criterion for placement {placement.at_id}",
                pointer=f"{base}/xdm:placementId",
            )
        resolved.append((wanted, decision, placement))
    return resolved
