"""The console's routes, mounted at ``/console`` by the API's app factory.

Sign-in and sign-out live here; the pages are in ``library``, ``history``, ``pql_check``,
``simulate`` and ``reports``; static files ship inside the package (``static/``).
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from nextoffer.console import forms, history, library, pql_check, reports, session, simulate, web
from nextoffer.console.session import Visitor, nextoffer
from nextoffer.errors import AuthError, NextOfferError

PREFIX = "/console"


def login_link(base: str, *, org: str, sandbox: str, api_key: str, access_token: str) -> str:
    """A ready sign-in link for ``nextoffer serve --demo`` and ``admin bootstrap``: the
    credentials ride in the fragment, which browsers never send to a server (no access
    log or proxy sees the token); the sign-in page's script fills the form from it."""
    fragment = urlencode(
        {"org": org, "sandbox": sandbox, "apiKey": api_key, "accessToken": access_token}
    )
    return f"{base.rstrip('/')}{PREFIX}/login#{fragment}"


def _next(target: str | None) -> str:
    """Where to go after signing in: a console path of this server, never another site."""
    if not target:
        return f"{PREFIX}/offers"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(f"{PREFIX}/"):
        return f"{PREFIX}/offers"
    return target


async def login_page(request: Request) -> Response:
    return web.sign_in_page(request, target=_next(request.query_params.get("next")))


async def login(request: Request) -> Response:
    context, fresh = session.login_context(request)
    formdata = await request.form()
    form = forms.bind(forms.LoginForm, formdata, session=context, secret=web.secret(request))
    target = _next(str(formdata.get("next") or ""))
    # A form's values kept when its session ended (web._session_ended): carried again by
    # every sign-in page shown after a refusal, so a mistyped token loses none of them.
    draft = str(formdata.get("draft") or "") or None
    error = None
    if not form.validate():
        if "csrf_token" in form.errors:
            error = "This sign-in form has expired or was not sent from this page: try again."
    else:
        values = {
            "org": form.org.data.strip(),
            "sandbox": form.sandbox.data.strip(),
            "apiKey": form.apiKey.data.strip(),
            "accessToken": form.accessToken.data.strip(),
        }
        no = nextoffer(request)
        try:
            principal = no.auth.authenticate(session.headers_of(values))
            containers = await no.run(no.repository.containers, principal)
        except AuthError as exc:
            error = f"Sign-in refused: {exc.message} ({exc.error_code})."
        except NextOfferError as exc:
            error = exc.detail
        else:
            chosen = [c for c in containers if c.container_type == "decisioning"] or containers
            if not chosen:
                error = "This org and sandbox have no container yet: run nextoffer admin bootstrap."
            else:
                data = session.new_session(values, chosen[0].container_id)
                visitor = Visitor(principal, chosen[0].container_id, data)
                response = await _restored(request, visitor, draft)
                if response is None:
                    flash = DRAFT_EXPIRED if draft else None
                    response = web.redirect(request, target, flash=flash)
                session.sign_in(request, response, data)
                return response
    return web.sign_in_page(
        request, target=target, form=form, login=(context, fresh), error=error, draft=draft
    )


#: Said when a form's values waited longer than :data:`session.DRAFT_SECONDS`.
DRAFT_EXPIRED = (
    "What you typed before your session ended was kept for an hour, and that hour has "
    "passed: nothing was saved. Make the change again."
)
#: Said when the sign-in is not by the user, or not to the org and sandbox, that a kept
#: form came from: its values are that tenant's, never shown in another's console.
NOT_YOURS = (
    "A form sent after a session had ended was kept for the user who sent it, in that "
    "org and sandbox. You signed in as another user or to another org or sandbox, so it "
    "was not brought back."
)


async def _restored(request: Request, visitor: Visitor, draft: str | None) -> Response | None:
    """The form a kept draft came from, filled with its values and not saved, or the page
    of a button that was not done, saying so (None: no draft, or one this server did not
    sign in the last hour). Nothing is saved or done here: the form's Save, or the button,
    with the new session's CSRF token, does that. A draft of another user, or of another
    org or sandbox, leads to the console's first page: even the address it was typed at
    is theirs."""
    kept = session.draft_of(request, draft)
    if kept is None:
        return None
    if not kept.is_for(visitor):
        return web.redirect(request, _next(None), flash=NOT_YOURS)
    if kept.undone is not None:
        return web.redirect(request, _next(kept.path), flash=web.undone_notice(kept))
    try:
        return await library.restore(request, visitor, kept.path, kept.values)
    except NextOfferError as exc:  # the object was deleted meanwhile, or is not visible
        return web.error_page(request, visitor, exc)


async def logout(request: Request) -> Response:
    visitor = session.current(request)
    formdata = await request.form()
    if visitor is not None and not web.csrf_ok(request, visitor, formdata):
        return web.refused(request, visitor)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    if visitor is not None:
        # Only a signed-in visitor's own form clears the cookie: a post from another site
        # carries no cookie (SameSite), and its answer must not sign anyone out.
        session.sign_out(response)
    return response


@web.page
async def home(request: Request, visitor: Visitor) -> Response:
    return RedirectResponse(f"{PREFIX}/offers", status_code=303)


def routes() -> list[BaseRoute]:
    """Everything under ``/console`` (the specific paths before the library's patterns)."""
    inner: list[BaseRoute] = [
        Route("/", home, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("nextoffer.console", "static")]), name="static"),
        *pql_check.routes,
        *simulate.routes,
        *reports.routes,
        *history.routes,
        *library.routes,
    ]
    return [
        Route(PREFIX, lambda _r: RedirectResponse(f"{PREFIX}/", 307), methods=["GET"]),
        Mount(PREFIX, routes=inner),
    ]
