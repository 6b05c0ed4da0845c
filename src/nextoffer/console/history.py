"""An instance's history: its revisions (who, when, what changed) and revert."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.console import library, web
from nextoffer.console.kinds import KINDS, Kind
from nextoffer.console.session import Visitor, nextoffer
from nextoffer.errors import BadRequest, Conflict, NotFound, Unprocessable


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 160 else text[:157] + "…"


def _kind(request: Request) -> Kind:
    kind = KINDS.get(request.path_params["kind"])
    if kind is None:
        raise NotFound(f"the console has no page {request.path_params['kind']!r}")
    return kind


async def _page(
    request: Request, visitor: Visitor, kind: Kind, instance_id: str, errors: list[str]
) -> Response:
    no = nextoffer(request)
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
            "errors": errors,
        },
        visitor=visitor,
    )


@web.page
async def history(request: Request, visitor: Visitor) -> Response:
    return await _page(request, visitor, _kind(request), request.path_params["instance_id"], [])


def _revert_undone(request: Request, formdata: Any) -> tuple[str, str]:
    """A revert sent after the session ended: the history it was on, and what was not done."""
    kind, page = library.object_page(request)
    page += "/history"
    noun = kind.noun if kind is not None else "object"
    revision = str(formdata.get("revision", ""))
    if not (revision.isascii() and revision.isdigit()) or len(revision) > 12:
        return page, f"the {noun} was not reverted"
    return page, f"the {noun} was not reverted to revision {revision}"


@web.button_page(_revert_undone)
async def revert(request: Request, visitor: Visitor) -> Response:
    kind = _kind(request)
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
    try:
        await no.run(
            no.repository.revert,
            visitor.principal,
            visitor.container_id,
            instance_id,
            int(text),
            if_match=int(current) if current.isdigit() else None,
        )
    except Conflict:
        # Someone saved since this page was read: the history as it is now, newest first.
        message = (
            f"Not reverted: someone changed this {kind.noun} since you opened its history. "
            "The newest revisions are listed below; choose again."
        )
        return await _page(request, visitor, kind, instance_id, [message])
    except Unprocessable as exc:
        # The revision's body no longer validates (it names an object deleted since).
        message = f"Not reverted to revision {text}: {exc.detail}"
        return await _page(request, visitor, kind, instance_id, [message])
    return web.redirect(
        request,
        f"/console/{kind.slug}/{instance_id}/history",
        flash=f"Reverted to revision {text}.",
    )


routes = [
    Route("/{kind:str}/{instance_id:str}/history", history, methods=["GET"]),
    Route("/{kind:str}/{instance_id:str}/revert", revert, methods=["POST"]),
]
