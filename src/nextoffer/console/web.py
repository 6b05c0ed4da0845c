"""What every console page shares: templates, the signed-in visitor, CSRF, reference lists.

Templates are Jinja2 with autoescaping on for every file: user text (an offer named
``<script>``) is always shown as text. A page handler is wrapped by :func:`page`, which
sends a visitor without a session to the sign-in page and turns the service's errors into
a page that says what went wrong (never a stack trace).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from nextoffer.console import forms, session
from nextoffer.console.session import Visitor, nextoffer
from nextoffer.errors import NextOfferError
from nextoffer.repository.objects import PLACEMENT, ObjectType
from nextoffer.repository.query import parse_query
from nextoffer.repository.records import InstanceRecord

log = logging.getLogger("nextoffer.console")

#: Reference selects list at most this many objects of a type (the container's guardrails
#: allow 10,000 offers; a select of more is no use to anyone: search the list instead).
MAX_OPTIONS = 1000

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("nextoffer.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["quote"] = lambda value: quote(str(value), safe="")
# An image the page may load: an absolute address. A relative one ("banner.png") would be
# fetched from the console itself, a 404 in the browser's console on every preview.
ENV.tests["image_url"] = lambda value: (
    isinstance(value, str)
    and value.strip().lower().startswith(("https://", "http://", "data:image/"))
)

Handler = Callable[[Request, Visitor], Awaitable[Response]]
#: A button's form (delete, a status, revert) read when its session had ended: the page
#: the button is on, and what was therefore not done ("the offer was not deleted").
Undone = Callable[[Request, Any], tuple[str, str]]

NAV = (
    ("offers", "Offers"),
    ("fallback-offers", "Fallback offers"),
    ("placements", "Placements"),
    ("collections", "Collections"),
    ("tags", "Collection qualifiers"),
    ("rules", "Decision rules"),
    ("ranking", "Ranking formulas"),
    ("ranking-strategies", "Ranking strategies"),
    ("decisions", "Decisions"),
    ("simulate", "Simulate"),
    ("reports", "Reports"),
)


def secret(request: Request) -> bytes:
    return nextoffer(request).auth.session_secret("console-csrf")


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    visitor: Visitor | None = None,
    status: int = 200,
) -> HTMLResponse:
    csrf = None
    if visitor is not None:
        csrf = forms.bind(forms.CsrfOnly, None, session=visitor.data, secret=secret(request))
    html = ENV.get_template(template).render(
        {
            "request": request,
            "visitor": visitor,
            "nav": NAV,
            "csrf_form": csrf,
            "flash": session.flash_text(request, request.query_params.get("flash")),
            # Whom the page is for, carried by its forms (see _session_ended).
            "owner": session.owner_token(request, visitor) if visitor is not None else None,
            **context,
        }
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            # Scripts and styles only from the console itself; no frames, no plugins.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data: https: http:; "
            "style-src 'self'; script-src 'self'; frame-ancestors 'none'; object-src 'none'; "
            "form-action 'self'; base-uri 'none'",
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        },
    )


#: What every answer of the console that is not a page carries (CSV, JSON): a
#: tenant's data is not kept by caches, nor read as another type.
PRIVATE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def redirect(request: Request, url: str, *, flash: str | None = None) -> RedirectResponse:
    if flash:
        token = session.flash_token(request, flash)
        url += ("&" if "?" in url else "?") + "flash=" + quote(token, safe="")
    return RedirectResponse(url, status_code=303)


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A page for signed-in visitors; errors of the service become an error page."""
    return _endpoint(handler, keeps_typing=False)


def form_page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A :func:`page` whose form, sent after the session ended, is not lost: the sign-in
    page carries what it held back to the form (see :func:`_session_ended`)."""
    return _endpoint(handler, keeps_typing=True)


def button_page(undone: Undone) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """A :func:`page` answering a button (delete, a status, revert) that, sent after the
    session ended, is not forgotten either: signing in leads back to the button's page,
    saying what was not done (``undone``), to be done again there. Never done from what
    was kept: a delete waits for its own button, with the new session's CSRF token."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        return _endpoint(handler, keeps_typing=False, undone=undone)

    return wrap


def _endpoint(
    handler: Handler, *, keeps_typing: bool, undone: Undone | None = None
) -> Callable[[Request], Awaitable[Response]]:
    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        visitor = await nextoffer(request).run(session.current, request)
        if visitor is None:
            if request.method != "GET":
                return await _session_ended(request, keeps_typing=keeps_typing, undone=undone)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/console/login?next={quote(target, safe='')}", 303)
        try:
            return await handler(request, visitor)
        except NextOfferError as exc:
            return error_page(request, visitor, exc)

    return endpoint


def same_origin(request: Request) -> bool:
    """Was this request sent by a page of this console (not by another site's form)?
    ``Sec-Fetch-Site`` says so where the browser sends it (all current ones do);
    otherwise the ``Origin`` must be this host. Neither: no (a client that is no browser
    has no typing to keep)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = urlsplit(request.headers.get("origin", ""))
    return bool(origin.netloc) and origin.netloc == request.headers.get("host")


#: What the sign-in page says above a form's values it carries back.
KEPT = (
    "Your session ended before this form was sent: nothing was saved yet. Sign in and the "
    "form comes back with what you typed, to check and save."
)


def kept_notice(draft: session.Draft) -> str:
    """What the sign-in page carrying ``draft`` says of it."""
    if draft.undone is None:
        return KEPT
    return (
        f"Your session ended before this form was sent: {draft.undone}. Sign in to go back "
        "to its page, and do it again there if you still want to."
    )


def undone_notice(draft: session.Draft) -> str:
    """What a button's page says after the sign-in that a button's ``draft`` led to."""
    return (
        f"Not done: your session had ended when you sent this form, so {draft.undone}. "
        "Press its button again if you still want to."
    )


#: Fields of the console's own: not a form's values to keep.
_NOT_KEPT = ("csrf_token", "draft", "owner")


async def _session_ended(
    request: Request, *, keeps_typing: bool, undone: Undone | None = None
) -> Response:
    """A form sent after the session ended (the token expired, or a sign-out in another
    tab): nothing was done.

    A library form of this console (:func:`same_origin`, carrying the signed ``owner``
    of the page it was on) is answered by the sign-in page itself, carrying the form's
    values in a signed, short-lived token (:func:`session.draft_token`) that names that
    owner; signing in as them, to that org and sandbox, shows the form again with the
    values, unsaved (``library.restore``); anyone else's sign-in does not. A button's
    form (:func:`button_page`) is kept the same way, as the page it was on and what was
    not done, which that sign-in leads back to and says. Another site's form gets nothing
    of the kind: it cannot make the console show a form filled with its values, nor ask
    for a button to be pressed again. Any other form leads back to the page it was on —
    not to the form's own address, which answers only POST (a 405 after signing in) —
    and the sign-in page says that nothing was saved."""
    formdata = await request.form() if keeps_typing or undone is not None else None
    owner = None
    if formdata is not None and same_origin(request):
        owner = session.owner_in(request, formdata.get("owner"))
    button = undone(request, formdata) if undone is not None else None
    if owner is not None and formdata is not None:
        if button is not None:
            draft = session.Draft(button[0], [], owner, undone=button[1])
        else:
            values = [
                (name, value)
                for name, value in formdata.multi_items()
                if name not in _NOT_KEPT and isinstance(value, str)
            ]
            draft = session.Draft(request.url.path, values, owner)
        token = session.draft_token(request, draft)
        if token is not None:
            notice = kept_notice(draft)
            return sign_in_page(request, target=draft.path, draft=token, notice=notice)
    target = "/console/"
    referer = urlsplit(request.headers.get("referer", ""))
    if button is not None:
        target = button[0]  # the button's own page, referer or not
    elif referer.netloc == request.url.netloc and referer.path.startswith("/console/"):
        kept = [(k, v) for k, v in parse_qsl(referer.query) if k != "flash"]
        target = referer.path + (f"?{urlencode(kept)}" if kept else "")
    return redirect(
        request,
        f"/console/login?next={quote(target, safe='')}",
        flash="Your session ended before this form was sent: nothing was saved. "
        "Sign in, then make the change again.",
    )


def sign_in_page(
    request: Request,
    *,
    target: str,
    form: Any = None,
    login: tuple[dict[str, Any], bool] | None = None,
    error: str | None = None,
    draft: str | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    """The sign-in form leading to ``target``: a blank one, or ``form`` shown again with
    ``error`` (bound to ``login``, the :func:`session.login_context` it was read with);
    ``draft`` is a form's values it carries back (:func:`_session_ended`), said again
    above the form each time it is shown (a mistyped token too)."""
    context, fresh = login if login is not None else session.login_context(request)
    if form is None:
        form = forms.bind(forms.LoginForm, None, session=context, secret=secret(request))
    values: dict[str, Any] = {"form": form, "error": error, "next": target, "draft": draft}
    kept = session.draft_of(request, draft) if notice is None else None
    if kept is not None:
        notice = kept_notice(kept)
    if notice is not None:
        values["flash"] = notice
    # Shown again with its message (200, as every form shown again: see library._editor).
    response = render(request, "login.html", values)
    if fresh:
        session.keep_login(request, response, context)
    return response


def error_page(request: Request, visitor: Visitor | None, exc: NextOfferError) -> HTMLResponse:
    status = getattr(exc, "http_status", exc.status)
    if status >= 500:
        log.error("console: %s on %s", exc.for_operator(), request.url.path)
    return render(
        request, "error.html", {"title": exc.title, "error": exc}, visitor=visitor, status=status
    )


def csrf_ok(request: Request, visitor: Visitor, formdata: Any) -> bool:
    form = forms.bind(forms.CsrfOnly, formdata, session=visitor.data, secret=secret(request))
    return bool(form.validate())


def refused(request: Request, visitor: Visitor | None) -> HTMLResponse:
    """A form posted without a valid CSRF token: nothing was done."""
    return render(
        request,
        "error.html",
        {
            "title": "Form refused",
            "error": None,
            "message": "This form was not sent from this console session (its security "
            "token is missing or wrong), so nothing was changed. Reload the page and try again.",
        },
        visitor=visitor,
        status=403,
    )


def options(
    request: Request, visitor: Visitor, types: set[ObjectType]
) -> dict[ObjectType, list[tuple[str, str, dict[str, Any]]]]:
    """``[(@id, name, body)]`` of each type, by name (blocking: call through ``no.run``).
    Only placements come with their bodies (a representation takes its channel and content
    type from its placement); the others are names only, read without their bodies."""
    no = nextoffer(request)
    out: dict[ObjectType, list[tuple[str, str, dict[str, Any]]]] = {}
    for object_type in types:
        if object_type is not PLACEMENT:
            names = no.repository.names(
                visitor.principal, visitor.container_id, object_type, limit=MAX_OPTIONS
            )
            out[object_type] = [(at_id, name, {}) for at_id, name in names]
            continue
        query = parse_query(
            [
                ("schema", object_type.schema_id),
                ("orderby", "xdm:name"),
                ("limit", str(MAX_OPTIONS)),
            ]
        )
        found = no.search.find(visitor.principal, visitor.container_id, query)
        out[object_type] = [(r.at_id, display_name(r), r.body) for r in found.records]
    return out


def display_name(record: InstanceRecord) -> str:
    """The name to show and link: a name of spaces only is no name (it made an empty,
    unclickable row in a list)."""
    name = record.body.get("xdm:name", record.body.get("name"))
    return name if isinstance(name, str) and name.strip() else record.at_id


def by_name(message: str, names: dict[str, str]) -> str:
    """``message`` with each ``@id`` of ``names`` it quotes replaced by its name, as the
    forms name it ("decision “Homepage” has no criterion for placement “Email”")."""
    for at_id, name in names.items():
        if at_id in message:  # not inside a longer id (an id has 1 to 16 hex digits)
            # A name's backslash is text, not a group reference: escaped for re.sub.
            quoted = f"“{name}”".replace("\\", "\\\\")
            message = re.sub(re.escape(at_id) + r"(?![0-9a-f])", quoted, message)
    return message
