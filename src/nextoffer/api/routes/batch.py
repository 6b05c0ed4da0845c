"""Batch decisioning over HTTP (decisioning-api.md §7; docs/api.md "Batch decisioning"):

* segment definitions, Adobe's Segmentation Service paths: ``/data/core/ups/segment/definitions``;
* output datasets: ``/data/core/nextoffer/datasets`` (nextoffer's own; Adobe's are in its
  Catalog Service), their files listed and downloaded;
* workloads, both documented forms: ``/data/core/ode/{C}/workloads/decisions`` (2022) and
  ``/data/core/dwm/workloads/decisions`` (current), ``GET`` and ``DELETE`` (cancel) by id.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from nextoffer.api.context import authenticate, body_json, nextoffer
from nextoffer.api.responses import json_response
from nextoffer.errors import BadRequest
from nextoffer.service.batch.jobs import JobRecord
from nextoffer.service.datasets import DatasetRecord
from nextoffer.service.segments import SegmentRecord

SEGMENTS = "/data/core/ups/segment/definitions"
DATASETS = "/data/core/nextoffer/datasets"
ODE_WORKLOADS = "/data/core/ode/{container_id}/workloads/decisions"
DWM_WORKLOADS = "/data/core/dwm/workloads/decisions"


# -- segment definitions ----------------------------------------------------------------


#: The largest integer a query parameter may hold: the databases' (a signed 64-bit one).
MAX_PARAM = 2**63 - 1


def _int_param(request: Request, name: str, default: int, *, minimum: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer", pointer=name) from None
    if not minimum <= number <= MAX_PARAM:
        raise BadRequest(f"{name} must be an integer from {minimum} to {MAX_PARAM}", pointer=name)
    return number


def segment_json(record: SegmentRecord) -> dict[str, Any]:
    return record.body


async def create_segment(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    body = await body_json(request)
    record = await no.run(no.segments.create, principal, body)
    return json_response(segment_json(record))


async def list_segments(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    start = _int_param(request, "start", 0, minimum=0)
    limit = _int_param(request, "limit", 100, minimum=1)
    records, total = await no.run(no.segments.get_all, principal, start=start, limit=limit)
    size = max(1, min(limit, 100))
    return json_response(
        {
            "segments": [segment_json(r) for r in records],
            "page": {
                "totalCount": total,
                "totalPages": (total + size - 1) // size,
                "sortField": "creationTime",
                "sort": "asc",
                "pageSize": len(records),
                "limit": size,
            },
            "link": {
                "next": (
                    f"{SEGMENTS}?start={start + size}&limit={size}" if start + size < total else ""
                )
            },
        }
    )


async def get_segment(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    record = await no.run(no.segments.get, principal, request.path_params["segment_id"])
    return json_response(segment_json(record))


async def patch_segment(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    body = await body_json(request)
    record = await no.run(no.segments.update, principal, request.path_params["segment_id"], body)
    return json_response(segment_json(record))


async def delete_segment(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    await no.run(no.segments.delete, principal, request.path_params["segment_id"])
    return Response(status_code=204)


# -- datasets ---------------------------------------------------------------------------


def dataset_json(record: DatasetRecord) -> dict[str, Any]:
    return {
        "id": record.dataset_id,
        "name": record.name,
        "location": record.location,
        "imsOrgId": record.org_id,
        "sandboxName": record.sandbox,
        "created": record.created_ms,
        "files": f"{DATASETS}/{record.dataset_id}/files",
    }


async def create_dataset(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    body = await body_json(request)
    record = await no.run(no.datasets.create, principal, body)
    return json_response(dataset_json(record), status=201)


async def list_datasets(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    records = await no.run(no.datasets.get_all, principal)
    return json_response({"datasets": [dataset_json(r) for r in records]})


async def get_dataset(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    record = await no.run(no.datasets.get, principal, request.path_params["dataset_id"])
    return json_response(dataset_json(record))


async def list_files(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    dataset_id = request.path_params["dataset_id"]
    files = await no.run(no.datasets.files, principal, dataset_id)
    return json_response(
        {
            "files": [
                {
                    "name": f.path,
                    "length": f.size,
                    "modified": f.modified_ms,
                    "href": f"{DATASETS}/{dataset_id}/files/{f.path}",
                }
                for f in files
            ]
        }
    )


async def download_file(request: Request) -> Response:
    """A committed job's file, streamed from the dataset's location (a local folder or an
    object store)."""
    principal = authenticate(request)
    no = nextoffer(request)
    params = request.path_params
    relative = f"{params['job_id']}/{params['name']}"
    found, blocks = await no.run(no.datasets.open, principal, params["dataset_id"], relative)
    name = params["name"]
    return StreamingResponse(
        blocks,
        media_type="application/json" if name.endswith(".json") else "application/octet-stream",
        headers={
            "Content-Length": str(found.size),
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


# -- workloads --------------------------------------------------------------------------


def job_json(record: JobRecord, *, detail: bool, request: Request) -> dict[str, Any]:
    """A job as the workloads API answers (decisioning-api.md §7): the documented members,
    the request's, and ``ode:statusDetail`` when read back (choices: docs/api.md). The
    2022 form (``/ode/{C}/…``) answers with ``xdm:containerId``, the current one without,
    whichever form submitted the job."""
    body: dict[str, Any] = {
        "@id": record.job_id,
        "xdm:imsOrgId": record.org_id,
    }
    if "container_id" in request.path_params:
        body["xdm:containerId"] = record.container_id
    body["ode:createDate"] = record.created_ms
    body["ode:status"] = record.status
    if detail:
        body["ode:statusDetail"] = record.detail
        body["xdm:segmentIds"] = [record.segment_id]
        body["xdm:dataSetId"] = record.dataset_id
        body["xdm:propositionRequests"] = record.request["propositions"]
        body["xdm:includeContent"] = record.request["includeContent"]
        body["nextoffer:engine"] = record.engine
        body["nextoffer:seed"] = record.request["seed"]
    return body


async def submit_job(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    body = await body_json(request)
    container_id = request.path_params.get("container_id")
    record = await no.run(no.batch.submit, principal, body, container_id=container_id)
    return json_response(job_json(record, detail=False, request=request))


async def get_job(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    record = await no.run(
        no.batch.get,
        principal,
        request.path_params["job_id"],
        container_id=request.path_params.get("container_id"),
    )
    return json_response(job_json(record, detail=True, request=request))


async def cancel_job(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    record = await no.run(
        no.batch.cancel,
        principal,
        request.path_params["job_id"],
        container_id=request.path_params.get("container_id"),
    )
    return json_response(job_json(record, detail=True, request=request))


routes = [
    Route(SEGMENTS, create_segment, methods=["POST"]),
    Route(SEGMENTS, list_segments, methods=["GET"]),
    Route(f"{SEGMENTS}/{{segment_id}}", get_segment, methods=["GET"]),
    Route(f"{SEGMENTS}/{{segment_id}}", patch_segment, methods=["PATCH"]),
    Route(f"{SEGMENTS}/{{segment_id}}", delete_segment, methods=["DELETE"]),
    Route(DATASETS, create_dataset, methods=["POST"]),
    Route(DATASETS, list_datasets, methods=["GET"]),
    Route(f"{DATASETS}/{{dataset_id}}", get_dataset, methods=["GET"]),
    Route(f"{DATASETS}/{{dataset_id}}/files", list_files, methods=["GET"]),
    Route(f"{DATASETS}/{{dataset_id}}/files/{{job_id}}/{{name}}", download_file, methods=["GET"]),
    *(
        Route(path, endpoint, methods=[method])
        for base in (ODE_WORKLOADS, DWM_WORKLOADS)
        for path, endpoint, method in (
            (base, submit_job, "POST"),
            (f"{base}/{{job_id}}", get_job, "GET"),
            (f"{base}/{{job_id}}", cancel_job, "DELETE"),
        )
    ),
]
