"""The library pages: list (search, filters, paging), create, edit, status, delete.

Every write goes through the root's repository with the same checks as the API; a 422 is
shown beside the fields its pointers name, a 409 (someone saved since this page was read)
keeps what the visitor typed and offers to reload the current version.
"""

from __future__ import annotations

import copy
import re
import secrets
from typing import Any
from urllib.parse import quote

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer import pql
from nextoffer.console import forms, kinds, session, web
from nextoffer.console.kinds import Kind
from nextoffer.console.session import Visitor, nextoffer
from nextoffer.errors import BadRequest, Conflict, NotFound, PQLError, Unprocessable
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
        # A search box's words narrow the list: every word must match (the API's
        # default, any word, lists every offer for "Bulk offer 007").
        ("qop", "AND"),
        ("start", params.get("start", "")),
    ]
    if status in kind.statuses:
        pairs.append(("property", f"_instance.xdm:status=={status}"))
    search_error = None
    try:
        query = parse_query(pairs)
    except BadRequest as exc:
        if exc.pointer != "q":
            raise
        # What was typed in the search box is refused beside it; the list stays a list.
        search_error = exc.detail.removeprefix("q: ")
        records, total, next_start = [], 0, None
    else:
        found = await no.run(no.search.find, visitor.principal, visitor.container_id, query)
        records, total, next_start = found.records, found.total, None
        if found.total > len(found.records) and found.records:
            next_start = format_cursor(query.order, found.sort_values[-1])
    rows = [
        {
            "record": r,
            "name": web.display_name(r),
            "columns": [fn(r.body) for _h, fn in kind.columns],
        }
        for r in records
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
            "total": total,
            "next_start": next_start,
            "paged": bool(params.get("start")),
            "search_error": search_error,
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
    notice: str = "Not saved.",
    referrers: list[dict[str, str]] | None = None,
    restored: str | None = None,
) -> Response:
    """The form page. Shown again after a refused save it still answers 200: the page is
    the answer (the messages are in it), and a browser logs every 4xx page as an error.
    ``notice`` heads ``errors`` (a refused delete or status change is no refused save);
    ``referrers`` are the instances that keep a delete from happening, by name;
    ``restored`` says why the form holds values sent before and not saved (:func:`restore`)."""
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
            "notice": notice,
            "referrers": referrers or [],
            "restored": restored,
            # Messages beside any field, a representation's or a criterion's included
            # (a FieldList's own ``errors`` are those of its last validation only).
            "invalid": any(f.errors for f in kinds.all_fields(form)),
            "previews": previews,
            "json": kinds.summary(record.body) if record is not None else None,
        },
        visitor=visitor,
    )


@web.page
async def new_page(request: Request, visitor: Visitor) -> Response:
    """A new object's form: blank, or with ``?copy=<instance id>`` a duplicate's, filled
    from the original (named "… (copy)", a draft where the type has a status)."""
    kind = _kind(request)
    data = {**kind.to_data({}), "once": secrets.token_urlsafe(12)}
    original = request.query_params.get("copy")
    if original:
        no = nextoffer(request)
        record = await no.repository.get_async(visitor.principal, visitor.container_id, original)
        kind.check(record)
        data = {**data, **kind.to_data(record.body), "copy_of": record.instance_id}
        data["name"] = f"{data['name'] or web.display_name(record)} (copy)"
        if kind.statuses:
            data["status"] = kind.statuses[0]
    form = _blank_form(request, visitor, kind, data)
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


def _place(
    form: Any, kind: Kind, exc: Unprocessable, rows: kinds.Rows, options: kinds.Options
) -> list[str]:
    """Put each of the 422's messages beside its field; those of no field are returned.
    An ``@id`` the form offers by name is named ("another uses “Perso AI”")."""
    names = {at_id: name for found in options.values() for at_id, name, _b in found if name}
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
        message = web.by_name(str(problem.get("message") or ""), names)
        name = kinds.field_for(kind, pointer, rows)
        target = _field(form, name) if name else None
        if target is None:
            unplaced.append(f"{pointer}: {message}" if pointer and pointer != "/" else message)
        else:
            target.errors = [*target.errors, message]
    return unplaced


def _field(form: Any, name: str) -> Any:
    """A field by its rendered name (``representations-0-placement`` included)."""
    for field in kinds.all_fields(form):
        if field.name == name:
            return field
    return None


#: An editor's address: ``/console/<kind>/new`` or ``/console/<kind>/<instance id>``.
_EDITOR = re.compile(r"^/console/([a-z-]+)/([^/]+)$")
#: Why a form is shown with values it was sent with, not saved.
AFTER_SIGN_IN = (
    "Your session had ended when you sent this form. What you typed is back in it: "
    "check it, then press Save."
)
OLD_FORM = (
    "This form was opened in an earlier session (or over a day ago), so its security "
    "token no longer holds. What you typed is back in it: check it, then press Save."
)


async def restore(
    request: Request, visitor: Visitor, path: str, formdata: Any, *, notice: str = AFTER_SIGN_IN
) -> Response | None:
    """The editor at ``path`` filled with ``formdata`` (values sent before, see
    ``web._session_ended``), and not saved: its Save sends them with this session's CSRF
    token. None when ``path`` is no editor of the console."""
    match = _EDITOR.match(path)
    kind = kinds.KINDS.get(match.group(1)) if match else None
    if match is None or kind is None:
        return None
    if not isinstance(formdata, ImmutableMultiDict):
        formdata = ImmutableMultiDict(formdata)
    form = forms.bind(kind.form, formdata, session=visitor.data, secret=web.secret(request))
    record = None
    if match.group(2) != "new":
        no = nextoffer(request)
        record = await no.repository.get_async(visitor.principal, visitor.container_id, match[2])
        kind.check(record)
    options = await _options(request, visitor, kind)
    return _editor(request, visitor, kind, form, options, record=record, restored=notice)


@web.form_page
async def save(request: Request, visitor: Visitor) -> Response:
    """Create (no ``instance_id``) or replace; the form's etag is the If-Match."""
    kind = _kind(request)
    no = nextoffer(request)
    instance_id = request.path_params.get("instance_id")
    formdata = await request.form()
    form = forms.bind(kind.form, formdata, session=visitor.data, secret=web.secret(request))
    if not form.validate() and "csrf_token" in form.errors:
        theirs = session.owner_in(request, formdata.get("owner")) == session.owner_of(visitor)
        if form.csrf_token.data and web.same_origin(request) and theirs:
            # This console's own form with a token of an earlier session (signed in
            # again since) or over a day old: shown again, with this session's token;
            # only to the user, org and sandbox whose page it was (another may have
            # signed in since, in this browser: what was typed is not theirs to see).
            path = request.url.path
            again = await restore(request, visitor, path, formdata, notice=OLD_FORM)
            if again is not None:
                return again
        return web.refused(request, visitor)
    made = session.created_by(visitor, form.once.data) if instance_id is None else None
    if made is not None:
        try:
            done = await no.repository.get_async(visitor.principal, visitor.container_id, made)
        except NotFound:
            pass  # deleted since: this form creates it again
        else:
            name = web.display_name(done)
            return web.redirect(
                request,
                f"/console/{kind.slug}/{done.instance_id}",
                flash=f"This form was sent before: it created {name}, shown here. Nothing "
                "was created twice.",
            )
    options = await _options(request, visitor, kind)
    record = None
    if instance_id is not None:
        record = await no.repository.get_async(visitor.principal, visitor.container_id, instance_id)
        kind.check(record)
    if form.errors:  # a number that is not one: the body cannot be made
        return _editor(request, visitor, kind, form, options, record=record)
    current = copy.deepcopy(record.body) if record is not None else {}
    if record is None and form.copy_of.data:
        original = await no.repository.get_async(
            visitor.principal, visitor.container_id, form.copy_of.data
        )
        kind.check(original)
        current = copy.deepcopy(original.body)
    rows: kinds.Rows = {}
    try:
        # A form whose choices make no body (a decision rule chosen as the audience, and
        # no rule) is refused as the repository refuses one: beside the field.
        body, rows = kind.to_body(form, current, options)
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
        unplaced = _place(form, kind, exc, rows, options)
        return _editor(request, visitor, kind, form, options, record=record, errors=unplaced)
    name = saved.body.get("xdm:name") or saved.at_id
    response = web.redirect(
        request, f"/console/{kind.slug}/{saved.instance_id}", flash=f"Saved {name}."
    )
    if record is None and form.once.data:
        session.remember_created(request, response, visitor, form.once.data, saved.instance_id)
    return response


#: Referring instances named on a refused delete (the count says how many more).
REFERRERS_SHOWN = 20


def _referrers(request: Request, visitor: Visitor, exc: Conflict) -> list[dict[str, str]]:
    """The instances a delete's 409 names, with their names and console pages (blocking:
    call through ``no.run``); one the visitor cannot open is shown by its ``@id``."""
    no = nextoffer(request)
    found = exc.extra.get("referencedBy")
    out: list[dict[str, str]] = []
    for item in found[:REFERRERS_SHOWN] if isinstance(found, list) else []:
        at_id, instance_id = str(item.get("@id", "")), str(item.get("instanceId", ""))
        other = kinds.BY_SCHEMA.get(str(item.get("schema", "")))
        try:
            record = no.repository.get(visitor.principal, visitor.container_id, instance_id)
        except NotFound:
            out.append({"name": at_id, "href": "", "noun": other.noun if other else ""})
            continue
        out.append(
            {
                "name": web.display_name(record),
                "href": f"/console/{other.slug}/{instance_id}" if other else "",
                "noun": other.noun if other else "",
            }
        )
    return out


async def _not_done(
    request: Request,
    visitor: Visitor,
    kind: Kind,
    instance_id: str,
    notice: str,
    errors: list[str],
    referrers: list[dict[str, str]] | None = None,
) -> Response:
    """The object's page as it is now, headed by why a button did nothing: a delete or a
    status change refused (someone saved since the page was read, or others refer to it)
    shows the current version instead of a bare error page."""
    no = nextoffer(request)
    record = await no.repository.get_async(visitor.principal, visitor.container_id, instance_id)
    kind.check(record)
    form = _blank_form(request, visitor, kind, {**kind.to_data(record.body), "etag": record.etag})
    options = await _options(request, visitor, kind)
    return _editor(
        request,
        visitor,
        kind,
        form,
        options,
        record=record,
        errors=errors,
        notice=notice,
        referrers=referrers,
    )


def object_page(request: Request) -> tuple[Kind | None, str]:
    """The kind (None: no kind of the console) and address of the object a button's
    address names (``/console/<kind>/<instance id>/<button>``)."""
    slug, instance_id = request.path_params["kind"], request.path_params["instance_id"]
    return kinds.KINDS.get(slug), f"/console/{quote(slug, safe='')}/{quote(instance_id, safe='')}"


def _status_undone(request: Request, formdata: Any) -> tuple[str, str]:
    """A status button sent after the session ended: its page, and the change not made."""
    kind, page = object_page(request)
    status = str(formdata.get("status", ""))
    if kind is None or status not in kind.statuses:
        return page, "the status was not changed"
    return page, f"the status of the {kind.noun} was not changed to {status}"


def _delete_undone(request: Request, formdata: Any) -> tuple[str, str]:
    """A Delete sent after the session ended: its page, and what was not deleted."""
    kind, page = object_page(request)
    return page, f"the {kind.noun if kind else 'object'} was not deleted"


def _changed_since(kind: Kind) -> str:
    return (
        f"Someone changed this {kind.noun} since you opened the page: this is the current "
        "version. Check it, then try again."
    )


@web.button_page(_status_undone)
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
    try:
        await no.run(
            no.repository.patch,
            visitor.principal,
            visitor.container_id,
            instance_id,
            [{"op": "replace", "path": "/_instance/xdm:status", "value": status}],
            schema=SchemaRef(kind.object_type, None, kind.object_type.schema_id),
            if_match=int(etag) if etag.isdigit() else None,
        )
    except Conflict:
        notice = f"Status not changed to {status}."
        return await _not_done(request, visitor, kind, instance_id, notice, [_changed_since(kind)])
    return web.redirect(
        request, f"/console/{kind.slug}/{instance_id}", flash=f"Status is now {status}."
    )


@web.button_page(_delete_undone)
async def delete(request: Request, visitor: Visitor) -> Response:
    kind = _kind(request)
    no = nextoffer(request)
    formdata = await request.form()
    if not web.csrf_ok(request, visitor, formdata):
        return web.refused(request, visitor)
    etag = str(formdata.get("etag", ""))
    instance_id = request.path_params["instance_id"]
    kind.check(await no.repository.get_async(visitor.principal, visitor.container_id, instance_id))
    try:
        record = await no.run(
            no.repository.delete,
            visitor.principal,
            visitor.container_id,
            instance_id,
            if_match=int(etag) if etag.isdigit() else None,
        )
    except Conflict as exc:
        if "referencedBy" not in exc.extra:
            return await _not_done(
                request, visitor, kind, instance_id, "Not deleted.", [_changed_since(kind)]
            )
        referrers = await no.run(_referrers, request, visitor, exc)
        count = len(exc.extra["referencedBy"])
        more = count - len(referrers)
        message = (
            f"This {kind.noun} is used by {count} other "
            f"{'object' if count == 1 else 'objects'}: remove it from "
            f"{'it' if count == 1 else 'them'} (or delete {'it' if count == 1 else 'them'}) "
            "first." + (f" The first {len(referrers)} are listed." if more else "")
        )
        return await _not_done(
            request, visitor, kind, instance_id, "Not deleted.", [message], referrers
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
