"""The library pages: list (search, filters, paging), create, edit, status, delete.

Every write goes through the root's repository with the same checks as the API; a 422 is
shown beside the fields its pointers name, a 409 (someone saved since this page was read)
keeps what the visitor typed and offers to reload the current version.
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer import pql
from nextoffer.console import forms, kinds, web
from nextoffer.console.kinds import Kind
from nextoffer.console.session import Visitor, nextoffer
from nextoffer.errors import Conflict, NotFound, PQLError, Unprocessable
from nextoffer.repository import hal
from nextoffer.repository.objects import PLACEMENT, SchemaRef
from nextoffer.repository.query import format_cursor, parse_query

PAGE_SIZE = 25
ORDERS = {
    "name": "xdm:name",
    "-modified": "-repo:lastModifiedDate",
    "modified": "repo:lastModifiedDate",
}


def _kind(request: Request) -> Kind:
    kind = kinds.KINDS.get(request.path_params["kind"])
    if kind is None:
        raise NotFound(f"the console has no page {request.path_params['kind']!r}")
    return kind


@web.page
async def list_page(request: Request, visitor: Visitor) -> Response:
    kind = _kind(request)
    no = nextoffer(request)
    params = request.query_params
    q = params.get("q", "").strip()
    status = params.get("status", "")
    order = params.get("order", "-modified")
    pairs = [
        ("schema", kind.object_type.schema_id),
        ("orderby", ORDERS.get(order, ORDERS["-modified"])),
        ("limit", str(PAGE_SIZE)),
        ("q", q),
        ("start", params.get("start", "")),
    ]
    if status in kind.statuses:
        pairs.append(("property", f"_instance.xdm:status=={status}"))
    query = parse_query(pairs)
    found = await no.run(no.search.find, visitor.principal, visitor.container_id, query)
    next_start = None
    if found.total > len(found.records) and found.records:
        next_start = format_cursor(query.order, found.sort_values[-1])
    rows = [
        {
            "record": r,
            "name": web.display_name(r),
            "columns": [fn(r.body) for _h, fn in kind.columns],
        }
        for r in found.records
    ]
    return web.render(
        request,
        "list.html",
        {
            "kind": kind,
            "rows": rows,
            "q": q,
            "status": status,
            "order": order,
            "total": found.total,
            "next_start": next_start,
            "paged": bool(params.get("start")),
        },
        visitor=visitor,
    )


async def _options(request: Request, visitor: Visitor, kind: Kind) -> kinds.Options:
    types = {object_type for _p, object_type, _o in kind.references}
    if not types:
        return {}
    return await nextoffer(request).run(web.options, request, visitor, types)


def _blank_form(request: Request, visitor: Visitor, kind: Kind, data: dict[str, Any]) -> Any:
    return forms.bind(kind.form, None, session=visitor.data, secret=web.secret(request), data=data)


def _editor(
    request: Request,
    visitor: Visitor,
    kind: Kind,
    form: Any,
    options: kinds.Options,
    *,
    record: Any = None,
    errors: list[str] | None = None,
    conflict: bool = False,
) -> Response:
    """The form page. Shown again after a refused save it still answers 200: the page is
    the answer (the messages are in it), and a browser logs every 4xx page as an error."""
    kinds.fill_choices(form, kind, options)
    previews = []
    if record is not None:
        placements = {at_id: name for at_id, name, _b in options.get(PLACEMENT, [])}
        for rep in record.body.get("xdm:representations") or []:
            if isinstance(rep, dict):
                at_id = str(rep.get("xdm:placement"))
                previews.append({"placement": placements.get(at_id, at_id), "rep": rep})
    return web.render(
        request,
        "edit.html",
        {
            "kind": kind,
            "form": form,
            "record": record,
            "errors": errors or [],
            "conflict": conflict,
            "previews": previews,
            "json": kinds.summary(record.body) if record is not None else None,
        },
        visitor=visitor,
    )


@web.page
async def new_page(request: Request, visitor: Visitor) -> Response:
    kind = _kind(request)
    form = _blank_form(request, visitor, kind, kind.to_data({}))
    return _editor(request, visitor, kind, form, await _options(request, visitor, kind))


@web.page
async def edit_page(request: Request, visitor: Visitor) -> Response:
    kind = _kind(request)
    no = nextoffer(request)
    record = await no.repository.get_async(
        visitor.principal, visitor.container_id, request.path_params["instance_id"]
    )
    kind.check(record)
    form = _blank_form(request, visitor, kind, {**kind.to_data(record.body), "etag": record.etag})
    options = await _options(request, visitor, kind)
    return _editor(request, visitor, kind, form, options, record=record)


def _place(form: Any, kind: Kind, exc: Unprocessable, rows: kinds.Rows) -> list[str]:
    """Put each of the 422's messages beside its field; those of no field are returned."""
    listed = exc.extra.get("errors")
    if isinstance(exc, PQLError):
        problems = [{"pointer": exc.pointer or "", "message": pql.render_error(exc)}]
    elif isinstance(listed, list) and listed:
        problems = listed
    else:
        problems = [{"pointer": exc.pointer or "", "message": exc.detail}]
    unplaced: list[str] = []
    for problem in problems:
        pointer = str(problem.get("pointer") or "")
        message = str(problem.get("message") or "")
        name = kinds.field_for(kind, pointer, rows)
        target = _field(form, name) if name else None
        if target is None:
            unplaced.append(f"{pointer}: {message}" if pointer and pointer != "/" else message)
        else:
            target.errors = [*target.errors, message]
    return unplaced


def _field(form: Any, name: str) -> Any:
    """A field by its rendered name (``representations-0-placement`` included)."""
    for field in form:
        if field.name == name:
            return field
        if field.type == "FieldList":
            for entry in field.entries:
                for sub in entry.form:
                    if sub.name == name:
                        return sub
    return None


@web.page
async def save(request: Request, visitor: Visitor) -> Response:
    """Create (no ``instance_id``) or replace; the form's etag is the If-Match."""
    kind = _kind(request)
    no = nextoffer(request)
    instance_id = request.path_params.get("instance_id")
    formdata = await request.form()
    form = forms.bind(kind.form, formdata, session=visitor.data, secret=web.secret(request))
    if not form.validate() and "csrf_token" in form.errors:
        return web.refused(request, visitor)
    options = await _options(request, visitor, kind)
    record = None
    if instance_id is not None:
        record = await no.repository.get_async(visitor.principal, visitor.container_id, instance_id)
        kind.check(record)
    if form.errors:  # a number that is not one: the body cannot be made
        return _editor(request, visitor, kind, form, options, record=record)
    current = copy.deepcopy(record.body) if record is not None else {}
    body, rows = kind.to_body(form, current, options)
    try:
        if record is None:
            body.pop("@id", None)
            ref = SchemaRef(
                kind.object_type, kind.object_type.stored_version, kind.object_type.versioned_schema
            )
            saved = await no.run(
                no.repository.create, visitor.principal, visitor.container_id, ref, body
            )
        else:
            etag = form.etag.data
            saved = await no.run(
                no.repository.replace,
                visitor.principal,
                visitor.container_id,
                record.instance_id,
                None,
                body,
                if_match=int(etag) if etag and etag.isdigit() else -1,
            )
    except Conflict as exc:
        return _editor(
            request,
            visitor,
            kind,
            form,
            options,
            record=record,
            errors=[exc.detail],
            conflict=True,
        )
    except Unprocessable as exc:
        unplaced = _place(form, kind, exc, rows)
        return _editor(request, visitor, kind, form, options, record=record, errors=unplaced)
    name = saved.body.get("xdm:name") or saved.at_id
    return web.redirect(
        request, f"/console/{kind.slug}/{saved.instance_id}", flash=f"Saved {name}."
    )


@web.page
async def set_status(request: Request, visitor: Visitor) -> Response:
    kind = _kind(request)
    no = nextoffer(request)
    formdata = await request.form()
    if not web.csrf_ok(request, visitor, formdata):
        return web.refused(request, visitor)
    status = str(formdata.get("status", ""))
    if status not in kind.statuses:
        raise Unprocessable(f"a {kind.noun} cannot be {status!r}", pointer="/xdm:status")
    instance_id = request.path_params["instance_id"]
    etag = str(formdata.get("etag", ""))
    await no.run(
        no.repository.patch,
        visitor.principal,
        visitor.container_id,
        instance_id,
        [{"op": "replace", "path": "/_instance/xdm:status", "value": status}],
        schema=SchemaRef(kind.object_type, None, kind.object_type.schema_id),
        if_match=int(etag) if etag.isdigit() else None,
    )
    return web.redirect(
        request, f"/console/{kind.slug}/{instance_id}", flash=f"Status is now {status}."
    )


@web.page
async def delete(request: Request, visitor: Visitor) -> Response:
    kind = _kind(request)
    no = nextoffer(request)
    formdata = await request.form()
    if not web.csrf_ok(request, visitor, formdata):
        return web.refused(request, visitor)
    etag = str(formdata.get("etag", ""))
    instance_id = request.path_params["instance_id"]
    kind.check(await no.repository.get_async(visitor.principal, visitor.container_id, instance_id))
    record = await no.run(
        no.repository.delete,
        visitor.principal,
        visitor.container_id,
        instance_id,
        if_match=int(etag) if etag.isdigit() else None,
    )
    name = record.body.get("xdm:name") or record.at_id
    return web.redirect(request, f"/console/{kind.slug}", flash=f"Deleted {name}.")


@web.page
async def raw(request: Request, visitor: Visitor) -> Response:
    """The instance as the API answers it (HAL JSON), for developers beside a marketer."""
    no = nextoffer(request)
    record = await no.repository.get_async(
        visitor.principal, visitor.container_id, request.path_params["instance_id"]
    )
    _kind(request).check(record)
    return web.render(
        request,
        "raw.html",
        {"kind": _kind(request), "record": record, "json": kinds.summary(hal.resource(record))},
        visitor=visitor,
    )


KIND = "{kind:str}"
routes = [
    Route(f"/{KIND}", list_page, methods=["GET"]),
    Route(f"/{KIND}/new", new_page, methods=["GET"]),
    Route(f"/{KIND}/new", save, methods=["POST"]),
    Route(f"/{KIND}/{{instance_id:str}}", edit_page, methods=["GET"]),
    Route(f"/{KIND}/{{instance_id:str}}", save, methods=["POST"]),
    Route(f"/{KIND}/{{instance_id:str}}/status", set_status, methods=["POST"]),
    Route(f"/{KIND}/{{instance_id:str}}/delete", delete, methods=["POST"]),
    Route(f"/{KIND}/{{instance_id:str}}/json", raw, methods=["GET"]),
]
