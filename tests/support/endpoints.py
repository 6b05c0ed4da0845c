"""Every authenticated endpoint, as a request a tenant could send: for the auth and
tenant-isolation matrices. ``tests/api/test_auth_matrix.py`` checks that this list
covers every route in ``openapi.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from support import CREATE_TYPE, PATCH_TYPE, schema

DECIDE_TYPE = (
    'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/'
    'decision-request;version=1.0"'
)
HTML = "https://ns.adobe.com/experience/offer-management/content-component-html"
WEB = "https://ns.adobe.com/xdm/channel-types/web"


@dataclass(frozen=True)
class Call:
    """One request: ``path`` and ``params`` may name ``{C}`` (container), ``{I}`` (an
    instance id), ``{A}`` (a decision @id), ``{P}`` (a placement @id), ``{E}`` (an email),
    ``{D}`` (a datastream id)."""

    name: str
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    body: Any = None
    #: The route in openapi.json this call exercises.
    route: str = ""

    def render(
        self, ids: dict[str, str]
    ) -> tuple[str, dict[str, str], bytes | None, dict[str, str]]:
        def fill(text: str) -> str:
            for key, value in ids.items():
                text = text.replace("{" + key + "}", value)
            return text

        headers = {"Content-Type": self.content_type} if self.content_type else {}
        content = fill(json.dumps(self.body)).encode() if self.body is not None else None
        return fill(self.path), {k: fill(v) for k, v in self.params.items()}, content, headers


_PLACEMENT = {"xdm:name": "P", "xdm:channel": WEB, "xdm:componentType": HTML}
_DECIDE = {
    "xdm:propositionRequests": [{"xdm:placementId": "{P}", "xdm:activityId": "{A}"}],
    "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": "{E}"}]}}],
    "xdm:responseFormat": {
        "xdm:includeContent": True,
        "xdm:includeMetadata": {"xdm:option": ["name"]},
    },
}

_SEGMENTS = "/data/core/ups/segment/definitions"
_DATASETS = "/data/core/nextoffer/datasets"
_ODE_WORKLOADS = "/data/core/ode/{containerId}/workloads/decisions"
_DWM_WORKLOADS = "/data/core/dwm/workloads/decisions"
#: An id no tenant has (the batch objects are not in the seeded library).
_NONE = "00000000-0000-0000-0000-000000000000"
_SEGMENT = {
    "name": "adults",
    "expression": {"type": "PQL", "format": "pql/text", "value": "age >= 18"},
}
_WORKLOAD = {
    "xdm:segmentIds": [_NONE],
    "xdm:dataSetId": _NONE,
    "xdm:propositionRequests": [{"xdm:activityId": "{A}", "xdm:placementId": "{P}"}],
}

CALLS: list[Call] = [
    Call("home", "GET", "/data/core/xcore/", route="/data/core/xcore/"),
    Call(
        "container",
        "GET",
        "/data/core/xcore/containers/{C}",
        route="/data/core/xcore/containers/{containerId}",
    ),
    Call(
        "create",
        "POST",
        "/data/core/xcore/{C}/instances",
        content_type=CREATE_TYPE.format(schema=schema("offer-placement")),
        body=_PLACEMENT,
        route="/data/core/xcore/{containerId}/instances",
    ),
    Call(
        "list",
        "GET",
        "/data/core/xcore/{C}/instances",
        params={"schema": "https://ns.adobe.com/experience/offer-management/personalized-offer"},
        route="/data/core/xcore/{containerId}/instances",
    ),
    Call(
        "search",
        "GET",
        "/data/core/xcore/{C}/queries/core/search",
        params={
            "schema": "https://ns.adobe.com/experience/offer-management/personalized-offer",
            "q": "off",
        },
        route="/data/core/xcore/{containerId}/queries/core/search",
    ),
    Call(
        "get",
        "GET",
        "/data/core/xcore/{C}/instances/{I}",
        route="/data/core/xcore/{containerId}/instances/{instanceId}",
    ),
    Call(
        "put",
        "PUT",
        "/data/core/xcore/{C}/instances/{I}",
        content_type=CREATE_TYPE.format(schema=schema("offer-placement")),
        body=_PLACEMENT,
        route="/data/core/xcore/{containerId}/instances/{instanceId}",
    ),
    Call(
        "patch",
        "PATCH",
        "/data/core/xcore/{C}/instances/{I}",
        content_type=PATCH_TYPE.format(schema=schema("offer-placement")),
        body=[{"op": "replace", "path": "/_instance/xdm:name", "value": "stolen"}],
        route="/data/core/xcore/{containerId}/instances/{instanceId}",
    ),
    Call(
        "delete",
        "DELETE",
        "/data/core/xcore/{C}/instances/{I}",
        route="/data/core/xcore/{containerId}/instances/{instanceId}",
    ),
    Call(
        "revisions",
        "GET",
        "/data/core/xcore/{C}/instances/{I}/revisions",
        route="/data/core/xcore/{containerId}/instances/{instanceId}/revisions",
    ),
    Call(
        "revert",
        "POST",
        "/data/core/xcore/{C}/instances/{I}/revisions/1/revert",
        route="/data/core/xcore/{containerId}/instances/{instanceId}/revisions/{revision}/revert",
    ),
    Call(
        "decide",
        "POST",
        "/data/core/ode/{C}/decisions",
        content_type=DECIDE_TYPE,
        body=_DECIDE,
        route="/data/core/ode/{containerId}/decisions",
    ),
    Call(
        "diagnostics",
        "GET",
        "/data/core/ode/{C}/diagnostics",
        route="/data/core/ode/{containerId}/diagnostics",
    ),
    Call(
        "activity-offers",
        "GET",
        "/data/core/ode/{C}/offers",
        params={"activityId": "{A}"},
        route="/data/core/ode/{containerId}/offers",
    ),
    Call(
        "decision-events",
        "GET",
        "/data/core/ode/{C}/decision-events",
        route="/data/core/ode/{containerId}/decision-events",
    ),
    # The dps form and the ods decisions: no container in the path (the sandbox's).
    Call(
        "dps-create",
        "POST",
        "/data/core/dps/placements",
        content_type="application/json",
        body={"name": "P", "channel": WEB, "componentType": "html"},
        route="/data/core/dps/{resource}",
    ),
    Call(
        "dps-list",
        "GET",
        "/data/core/dps/offers",
        params={"offer-type": "personalized"},
        route="/data/core/dps/{resource}",
    ),
    Call("dps-get", "GET", "/data/core/dps/placements/{P}", route="/data/core/dps/{resource}/{id}"),
    Call(
        "dps-patch",
        "PATCH",
        "/data/core/dps/placements/{P}",
        content_type="application/json",
        body=[{"op": "replace", "path": "/name", "value": "stolen"}],
        route="/data/core/dps/{resource}/{id}",
    ),
    Call(
        "dps-delete",
        "DELETE",
        "/data/core/dps/placements/{P}",
        content_type="application/json",
        route="/data/core/dps/{resource}/{id}",
    ),
    Call(
        "ods-decide",
        "POST",
        "/data/core/ods/decisions",
        content_type=DECIDE_TYPE,
        body=_DECIDE,
        route="/data/core/ods/decisions",
    ),
    Call(
        "profile-upsert",
        "POST",
        "/data/core/nextoffer/profiles",
        content_type="application/json",
        body={"identityMap": {"Email": [{"id": "{E}"}]}, "profile": {"stolen": True}},
        route="/data/core/nextoffer/profiles",
    ),
    Call(
        "profile-get",
        "GET",
        "/data/core/nextoffer/profiles",
        params={"namespace": "Email", "id": "{E}"},
        route="/data/core/nextoffer/profiles",
    ),
    Call(
        "profile-delete",
        "DELETE",
        "/data/core/nextoffer/profiles",
        params={"namespace": "Email", "id": "{E}"},
        route="/data/core/nextoffer/profiles",
    ),
    Call(
        "events",
        "POST",
        "/data/core/nextoffer/events",
        content_type="application/json",
        body={
            "events": [
                {
                    "identityMap": {"Email": [{"id": "{E}"}]},
                    "timestamp": "2026-01-01T00:00:00Z",
                    "eventType": "web.webpagedetails.pageViews",
                    "_id": "stolen-event",
                }
            ]
        },
        route="/data/core/nextoffer/events",
    ),
    Call(
        "offers-report",
        "GET",
        "/data/core/nextoffer/reports/offers",
        params={"containerId": "{C}"},
        route="/data/core/nextoffer/reports/offers",
    ),
    Call(
        "ranking-strategy-report",
        "GET",
        "/data/core/nextoffer/reports/ranking-strategies/{I}",
        params={"containerId": "{C}"},
        route="/data/core/nextoffer/reports/ranking-strategies/{strategy}",
    ),
    Call(
        "datastream-create",
        "POST",
        "/data/core/nextoffer/datastreams",
        content_type="application/json",
        body={"name": "stolen", "allowedOrigins": ["https://evil.test"]},
        route="/data/core/nextoffer/datastreams",
    ),
    Call(
        "datastream-list",
        "GET",
        "/data/core/nextoffer/datastreams",
        route="/data/core/nextoffer/datastreams",
    ),
    Call(
        "datastream-get",
        "GET",
        "/data/core/nextoffer/datastreams/{D}",
        route="/data/core/nextoffer/datastreams/{datastreamId}",
    ),
    Call(
        "datastream-patch",
        "PATCH",
        "/data/core/nextoffer/datastreams/{D}",
        content_type="application/json",
        body={"allowedOrigins": ["https://evil.test"]},
        route="/data/core/nextoffer/datastreams/{datastreamId}",
    ),
    Call(
        "datastream-delete",
        "DELETE",
        "/data/core/nextoffer/datastreams/{D}",
        route="/data/core/nextoffer/datastreams/{datastreamId}",
    ),
    # -- batch decisioning (issue 18) --
    *(
        Call(name, method, path, content_type=ctype, body=body, route=route)
        for name, method, path, ctype, body, route in (
            (
                "segment-create",
                "POST",
                _SEGMENTS,
                "application/json",
                _SEGMENT,
                _SEGMENTS,
            ),
            ("segment-list", "GET", _SEGMENTS, None, None, _SEGMENTS),
            (
                "segment-get",
                "GET",
                f"{_SEGMENTS}/{_NONE}",
                None,
                None,
                f"{_SEGMENTS}/{{segmentId}}",
            ),
            (
                "segment-patch",
                "PATCH",
                f"{_SEGMENTS}/{_NONE}",
                "application/json",
                {"name": "stolen"},
                f"{_SEGMENTS}/{{segmentId}}",
            ),
            (
                "segment-delete",
                "DELETE",
                f"{_SEGMENTS}/{_NONE}",
                None,
                None,
                f"{_SEGMENTS}/{{segmentId}}",
            ),
            ("dataset-create", "POST", _DATASETS, "application/json", {"name": "d"}, _DATASETS),
            ("dataset-list", "GET", _DATASETS, None, None, _DATASETS),
            (
                "dataset-get",
                "GET",
                f"{_DATASETS}/{_NONE}",
                None,
                None,
                f"{_DATASETS}/{{dataSetId}}",
            ),
            (
                "dataset-files",
                "GET",
                f"{_DATASETS}/{_NONE}/files",
                None,
                None,
                f"{_DATASETS}/{{dataSetId}}/files",
            ),
            (
                "dataset-file",
                "GET",
                f"{_DATASETS}/{_NONE}/files/{_NONE}/manifest.json",
                None,
                None,
                f"{_DATASETS}/{{dataSetId}}/files/{{jobId}}/{{name}}",
            ),
            *(
                item
                for base, route in (
                    ("/data/core/ode/{C}/workloads/decisions", _ODE_WORKLOADS),
                    ("/data/core/dwm/workloads/decisions", _DWM_WORKLOADS),
                )
                for item in (
                    (
                        f"workload-start {route}",
                        "POST",
                        base,
                        "application/json",
                        _WORKLOAD,
                        route,
                    ),
                    (
                        f"workload-get {route}",
                        "GET",
                        f"{base}/{_NONE}",
                        None,
                        None,
                        f"{route}/{{workloadId}}",
                    ),
                    (
                        f"workload-cancel {route}",
                        "DELETE",
                        f"{base}/{_NONE}",
                        None,
                        None,
                        f"{route}/{{workloadId}}",
                    ),
                )
            ),
        )
    ),
]
