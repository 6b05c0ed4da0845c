"""The Offer Library repository API (xcore): ``/data/core/xcore/…`` (spec §4)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.api import media
from nextoffer.api.conditional import etag_header, if_match, not_modified
from nextoffer.api.context import authenticate, body_json, nextoffer
from nextoffer.api.responses import json_response
from nextoffer.errors import BadRequest, NotFound
from nextoffer.repository import hal, query
from nextoffer.repository.objects import (
    CONTAINER_SCHEMA,
    HOME_SCHEMA,
    OBJECT_TYPES,
    SchemaRef,
    parse_schema_ref,
)
from nextoffer.repository.records import InstanceRecord

BASE = "/data/core/xcore"

#: Envelope members a client may send around ``_instance`` (e.g. a resource it read).
_ENVELOPE_KEYS = frozenset(
    {
        "_instance",
        "_links",
        "_embedded",
        "schemas",
        "instanceId",
        "productContexts",
        "_score",
        "sandboxName",
    }
)

_CREATE_TYPES = (media.SCHEMA_INSTANCE, media.HAL)
# An existing instance's schema is known: PUT and PATCH also take plain JSON.
_REPLACE_TYPES = (*_CREATE_TYPES, media.JSON)
_PATCH_TYPES = (media.PATCH_HAL, media.JSON_PATCH, media.SCHEMA_INSTANCE, media.JSON)


def _content_type(request: Request, accepted: tuple[str, ...]) -> media.MediaType:
    return media.require(request.headers.get("content-type"), accepted)


def _schema(parsed: media.MediaType, *, required: bool) -> SchemaRef | None:
    schema = parsed.params.get("schema")
    if not schema:
        if required:
            raise BadRequest(
                'the Content-Type needs a schema parameter, e.g. schema="https://ns.adobe.com/experience/offer-management/offer-placement;version=0.4"'
            )
        return None
    return parse_schema_ref(schema, where="Content-Type schema")


def _unwrap(body: Any) -> tuple[dict[str, Any], str]:
    """The instance properties and the pointer prefix they were found under."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", pointer="/")
    inner = body.get("_instance")
    if isinstance(inner, dict) and all(k in _ENVELOPE_KEYS or k.startswith("repo:") for k in body):
        return inner, "/_instance"
    return body, ""


def _receipt(
    record: InstanceRecord, *, status: int, headers: dict[str, str] | None = None
) -> Response:
    return json_response(
        hal.receipt(record),
        status=status,
        media_type=media.RECEIPT,
        headers={**etag_header(record), **(headers or {})},
    )


async def home(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    containers = await no.run(no.repository.containers, principal)
    # Empty values are absent ones, as on list and search (Postman sends ``product=``).
    products = [p for p in request.query_params.getlist("product") if p]
    if products:
        containers = [c for c in containers if set(c.product_contexts) & set(products)]
    # The grammar of list and search (spec §5.2) over each container's home resource.
    filters = [query.parse_filter(e) for e in request.query_params.getlist("property") if e]
    containers = [
        c for c in containers if all(query.matches(f, hal.container_resource(c)) for f in filters)
    ]
    self_href = "/" + (f"?{request.url.query}" if request.url.query else "")
    body = {
        "_embedded": {CONTAINER_SCHEMA: [hal.container_resource(c) for c in containers]},
        "_links": {"self": {"href": self_href, "@type": HOME_SCHEMA}},
    }
    return json_response(body, media_type=media.HOME)


async def get_container(request: Request) -> Response:
    """A container of the home document, at its ``_links.self`` (``/containers/{C}``)."""
    principal = authenticate(request)
    container_id = request.path_params["container_id"]
    no = nextoffer(request)
    containers = await no.run(no.repository.containers, principal)
    record = next((c for c in containers if c.container_id == container_id), None)
    if record is None:
        raise NotFound(f"container {container_id} does not exist")
    return json_response(
        hal.container_resource(record),
        media_type=media.hal_of(f"{CONTAINER_SCHEMA};version={hal.CONTAINER_VERSION}"),
        headers={"ETag": f'"{record.etag}"'},
    )


async def create_instance(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    parsed = _content_type(request, _CREATE_TYPES)
    schema = _schema(parsed, required=True)
    assert schema is not None  # required=True raises instead
    body, prefix = _unwrap(await body_json(request))
    container_id = request.path_params["container_id"]
    record = await no.run(
        no.repository.create, principal, container_id, schema, body, prefix=prefix
    )
    base = str(request.base_url).rstrip("/") + BASE + "/"
    return _receipt(
        record,
        status=201,
        headers={"Location": hal.instance_href(record).lstrip("/"), "Content-Base": base},
    )


async def get_instance(request: Request) -> Response:
    principal = authenticate(request)
    record = await nextoffer(request).repository.get_async(
        principal, request.path_params["container_id"], request.path_params["instance_id"]
    )
    if not_modified(request, record):
        return Response(status_code=304, headers=etag_header(record))
    versioned = OBJECT_TYPES[record.schema_id].versioned_schema
    return json_response(
        hal.resource(record), media_type=media.hal_of(versioned), headers=etag_header(record)
    )


async def replace_instance(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    parsed = _content_type(request, _REPLACE_TYPES)
    schema = _schema(parsed, required=False)
    body, prefix = _unwrap(await body_json(request))
    record = await no.run(
        no.repository.replace,
        principal,
        request.path_params["container_id"],
        request.path_params["instance_id"],
        schema,
        body,
        if_match=if_match(request),
        prefix=prefix,
    )
    return _receipt(record, status=200)


async def patch_instance(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    parsed = _content_type(request, _PATCH_TYPES)
    schema = _schema(parsed, required=False)
    operations = await body_json(request)
    record = await no.run(
        no.repository.patch,
        principal,
        request.path_params["container_id"],
        request.path_params["instance_id"],
        operations,
        schema=schema,
        if_match=if_match(request),
    )
    return _receipt(record, status=200)


async def delete_instance(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    record = await no.run(
        no.repository.delete,
        principal,
        request.path_params["container_id"],
        request.path_params["instance_id"],
        if_match=if_match(request),
    )
    return _receipt(record, status=202)


async def list_revisions(request: Request) -> Response:
    """Beyond Adobe: every kept write of an instance, newest first (docs/api.md)."""
    principal = authenticate(request)
    no = nextoffer(request)
    container_id = request.path_params["container_id"]
    instance_id = request.path_params["instance_id"]
    found = await no.run(no.repository.revisions, principal, container_id, instance_id)
    return json_response(
        {
            "containerId": container_id,
            "instanceId": instance_id,
            "revisions": [hal.revision(r.record, r.changes) for r in found],
        }
    )


async def revert_instance(request: Request) -> Response:
    """Beyond Adobe: write a kept revision's body again, as the newest revision."""
    principal = authenticate(request)
    no = nextoffer(request)
    text = request.path_params["revision"]
    if not text.isdigit():
        raise BadRequest("a revision is a positive integer", pointer="revision")
    record = await no.run(
        no.repository.revert,
        principal,
        request.path_params["container_id"],
        request.path_params["instance_id"],
        int(text),
        if_match=if_match(request),
    )
    return _receipt(record, status=200)


routes = [
    Route(f"{BASE}/", home, methods=["GET"]),
    Route(f"{BASE}/containers/{{container_id}}", get_container, methods=["GET"]),
    Route(f"{BASE}/{{container_id}}/instances", create_instance, methods=["POST"]),
    Route(
        f"{BASE}/{{container_id}}/instances/{{instance_id}}",
        get_instance,
        methods=["GET"],
    ),
    Route(f"{BASE}/{{container_id}}/instances/{{instance_id}}", replace_instance, methods=["PUT"]),
    Route(f"{BASE}/{{container_id}}/instances/{{instance_id}}", patch_instance, methods=["PATCH"]),
    Route(
        f"{BASE}/{{container_id}}/instances/{{instance_id}}", delete_instance, methods=["DELETE"]
    ),
    Route(
        f"{BASE}/{{container_id}}/instances/{{instance_id}}/revisions",
        list_revisions,
        methods=["GET"],
    ),
    Route(
        f"{BASE}/{{container_id}}/instances/{{instance_id}}/revisions/{{revision}}/revert",
        revert_instance,
        methods=["POST"],
    ),
]
