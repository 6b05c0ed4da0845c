"""References between instances and the integrity rules they obey (spec §6, §8).

Instances reference each other by ``@id``. Every ``xcore:<type>:<hex>`` (or ``dps:…``)
string naming a known object type, found under ``xdm:`` properties (and the 2019 ``ids``),
is a reference; it must resolve to an instance of that type in the same container. Free text (names,
descriptions, characteristics, content, rule text) and properties of other namespaces
(e.g. the UI's ``offerui:*``) are never read as references. Pure: the caller supplies what
the references resolve to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nextoffer.errors import Unprocessable
from nextoffer.repository.objects import (
    DECISION,
    FALLBACK_OFFER,
    ID_SCHEMES,
    PERSONALIZED_OFFER,
    ObjectType,
    at_id_type,
)
from nextoffer.repository.validation import pointer

_SCHEMES = tuple(f"{scheme}:" for scheme in ID_SCHEMES)

#: ``xdm:`` properties that hold text or content, not references.
_TEXT_KEYS = frozenset(
    {
        "xdm:name",
        "xdm:description",
        "xdm:characteristics",
        "xdm:components",
        "xdm:condition",
        "xdm:expression",
        "xdm:definedOn",
    }
)


def _is_reference_key(key: str) -> bool:
    return (key.startswith("xdm:") and key not in _TEXT_KEYS) or key == "ids"


@dataclass(frozen=True, slots=True)
class Reference:
    pointer: str  # where in the body (JSON pointer, without the request prefix)
    at_id: str
    type: ObjectType


def references(body: Mapping[str, Any]) -> list[Reference]:
    """Every reference in ``body`` (its own ``@id`` excluded), in document order."""
    found: list[Reference] = []
    stack: list[tuple[Any, list[Any]]] = [(body, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key in reversed(list(node)):
                if _is_reference_key(key):
                    stack.append((node[key], [*path, key]))
        elif isinstance(node, list):
            for index in range(len(node) - 1, -1, -1):
                stack.append((node[index], [*path, index]))
        elif isinstance(node, str) and node.startswith(_SCHEMES):
            object_type = at_id_type(node)
            if object_type is not None:
                found.append(Reference(pointer(path), node, object_type))
    return found


def rewrite(body: Any, mapping: Mapping[str, str]) -> Any:
    """A copy of ``body`` with every reference found in ``mapping`` replaced by its value
    (the same places :func:`references` reads; the body's own ``@id`` is not touched)."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) if _is_reference_key(k) else v for k, v in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, str):
            return mapping.get(node, node)
        return node

    return walk(body)


def decision_placements(body: Mapping[str, Any]) -> list[str]:
    """The placements a decision uses: every criterion's list and the 2019 flat one."""
    placements: list[str] = []
    for criterion in body.get("xdm:criteria") or []:
        if isinstance(criterion, dict):
            placements.extend(
                p for p in criterion.get("xdm:placements") or [] if p not in placements
            )
    flat = body.get("xdm:placement")
    if isinstance(flat, str) and flat not in placements:
        placements.append(flat)
    return placements


def representation_placements(body: Mapping[str, Any]) -> list[str]:
    return [
        placement
        for r in body.get("xdm:representations") or []
        if isinstance(r, dict) and isinstance(placement := r.get("xdm:placement"), str)
    ]


def check_integrity(
    object_type: ObjectType,
    body: Mapping[str, Any],
    resolved: Mapping[str, Mapping[str, Any]],
    *,
    prefix: str = "",
    refs: Sequence[Reference] | None = None,
) -> None:
    """Raise :class:`Unprocessable` when a reference does not resolve or a rule is broken.

    ``resolved`` maps each referenced ``@id`` that exists in the container to its body;
    ``refs``: :func:`references` of ``body`` when the caller has them already.
    """
    problems: list[dict[str, str]] = []
    for ref in references(body) if refs is None else refs:
        if ref.at_id not in resolved:
            problems.append(
                {
                    "pointer": prefix + ref.pointer,
                    "message": f"{ref.type.label} {ref.at_id} does not exist in this container",
                }
            )
    if object_type in (PERSONALIZED_OFFER, FALLBACK_OFFER):
        seen: set[str] = set()
        for index, placement in enumerate(representation_placements(body)):
            if placement in seen:
                problems.append(
                    {
                        "pointer": f"{prefix}/xdm:representations/{index}/xdm:placement",
                        "message": f"the offer already has a representation for {placement}",
                    }
                )
            seen.add(placement)
    if object_type is DECISION:
        fallback_id = body.get("xdm:fallback")
        fallback = resolved.get(fallback_id) if isinstance(fallback_id, str) else None
        if fallback is not None:
            covered = set(representation_placements(fallback))
            missing = [p for p in decision_placements(body) if p not in covered]
            if missing:
                problems.append(
                    {
                        "pointer": f"{prefix}/xdm:fallback",
                        "message": f"fallback offer {fallback_id} has no representation for "
                        f"placement(s) {', '.join(missing)} used by this decision",
                    }
                )
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise Unprocessable(
            f"{first['pointer'] or '/'}: {first['message']}{more}",
            pointer=first["pointer"] or "/",
            errors=problems,
        )
