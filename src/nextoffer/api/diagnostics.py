"""The diagnostics body of decisioning-api.md §1.1, from a snapshot's build errors.

Errors are grouped as Adobe groups them: each affected live decision, then the dependency
at fault (rule, formula, offer), then the message. Errors that touch no decision are
listed on their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nextoffer.engine import CatalogError, CatalogInstance
from nextoffer.service.catalogs import Snapshot


def _details(at_id: str, instances: Mapping[str, CatalogInstance], base: str) -> dict[str, Any]:
    instance = instances.get(at_id)
    if instance is None:
        return {"@id": at_id}
    return {
        "@id": at_id,
        "instanceId": instance.instance_id,
        "href": f"{base}/instances/{instance.instance_id}",
        "etag": str(instance.etag),
    }


def _cause(
    error: CatalogError, instances: Mapping[str, CatalogInstance], base: str
) -> dict[str, Any]:
    message = error.message
    if error.line is not None:
        message = f"{message} (line {error.line}, column {error.column})"
    return {
        "xdm:description": f"Encountered issues with the dependency: {error.at_id}",
        "xdm:causes": [
            {
                "xdm:description": f"The following issue(s) were encountered for {error.at_id}",
                "xdm:details": _details(error.at_id, instances, base),
                "xdm:causes": [{"xdm:description": message}],
            }
        ],
    }


def diagnostics(snapshot: Snapshot | None, *, base: str) -> dict[str, Any]:
    """``base`` is the absolute xcore URL of the container (``…/data/core/xcore/{C}``)."""
    if snapshot is None or (not snapshot.instances and not snapshot.errors):
        return {"xdm:operations": {}}
    instances = snapshot.instances
    by_activity: dict[str, list[CatalogError]] = {}
    unattached: list[CatalogError] = []
    for error in snapshot.errors:
        if error.activities:
            for activity in error.activities:
                by_activity.setdefault(activity, []).append(error)
        else:
            unattached.append(error)
    errors: list[dict[str, Any]] = []
    if by_activity:
        errors.append(
            {
                "xdm:description": "Error(s) were found in instances related to a live activity",
                "xdm:causes": [
                    {
                        "xdm:description": (
                            f"Error(s) were found while compiling scopes in {activity}"
                        ),
                        "xdm:details": _details(activity, instances, base),
                        "xdm:causes": [_cause(e, instances, base) for e in found],
                    }
                    for activity, found in sorted(by_activity.items())
                ],
            }
        )
    if unattached:
        errors.append(
            {
                "xdm:description": (
                    "Error(s) were found in instances not related to a live activity"
                ),
                "xdm:causes": [_cause(e, instances, base) for e in unattached],
            }
        )
    return {
        "xdm:operations": {
            "xdm:decisioningPackageUpdate": {"xdm:date": snapshot.built, "xdm:errors": errors}
        }
    }
