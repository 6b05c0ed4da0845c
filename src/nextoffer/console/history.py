"""An instance's history: its revisions (who, when, what changed) and revert."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.console import web
from nextoffer.console.kinds import KINDS
from nextoffer.console.session import Visitor, nextoffer
from nextoffer.errors import BadRequest, NotFound


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 160 else text[:157] + "…"


@web.page
async def history(request: Request, visitor: Visitor) -> Response:
    kind = KINDS.get(request.path_params["kind"])
    if kind is None:
        raise NotFound(f"the console has no page {request.path_params['kind']!r}")
    no = nextoffer(request)
    instance_id = request.path_params["instance_id"]
    found = await no.run(
        no.repository.revisions, visitor.principal, visitor.container_id, instance_id
    )
    kind.check(found[-1].record)
    latest = found[0].record
    revisions = [
        {
            "record": r.record,
            "changes": [
                {
                    "op": c["op"],
                    "path": c["path"],
                    "from": _short(c["from"]) if "from" in c else None,
                    "value": _short(c["value"]) if "value" in c else None,
                }
                for c in r.changes
            ],
        }
        for r in found
    ]
    name = latest.body.get("xdm:name") or latest.at_id
    return web.render(
        request,
        "history.html",
        {
            "kind": kind,
            "name": name,
            "instance_id": instance_id,
            "revisions": revisions,
            "current": latest.revision if latest.action != "delete" else None,
        },
        visitor=visitor,
    )


@web.page
async def revert(request: Request, visitor: Visitor) -> Response:
    kind = KINDS.get(request.path_params["kind"])
    if kind is None:
        raise NotFound(f"the console has no page {request.path_params['kind']!r}")
    formdata = await request.form()
    if not web.csrf_ok(request, visitor, formdata):
        return web.refused(request, visitor)
    text = str(formdata.get("revision", ""))
    current = str(formdata.get("etag", ""))
    if not text.isdigit():
        raise BadRequest("choose a revision to revert to", pointer="revision")
    no = nextoffer(request)
    instance_id = request.path_params["instance_id"]
    kind.check(await no.repository.get_async(visitor.principal, visitor.container_id, instance_id))
    await no.run(
        no.repository.revert,
        visitor.principal,
        visitor.container_id,
        instance_id,
        int(text),
        if_match=int(current) if current.isdigit() else None,
    )
    return web.redirect(
        request,
        f"/console/{kind.slug}/{instance_id}/history",
        flash=f"Reverted to revision {text}.",
    )


routes = [
    Route("/{kind:str}/{instance_id:str}/history", history, methods=["GET"]),
    Route("/{kind:str}/{instance_id:str}/revert", revert, methods=["POST"]),
]
