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
    context, fresh = session.login_context(request)
    form = forms.bind(forms.LoginForm, None, session=context, secret=web.secret(request))
    target = _next(request.query_params.get("next"))
    response = web.render(request, "login.html", {"form": form, "error": None, "next": target})
    if fresh:
        session.keep_login(request, response, context)
    return response


async def login(request: Request) -> Response:
    context, fresh = session.login_context(request)
    formdata = await request.form()
    form = forms.bind(forms.LoginForm, formdata, session=context, secret=web.secret(request))
    target = _next(str(formdata.get("next") or ""))
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
                redirect = RedirectResponse(target, status_code=303)
                session.sign_in(request, redirect, values, chosen[0].container_id)
                return redirect
    # Shown again with its message (200, as every form shown again: see library._editor).
    response = web.render(request, "login.html", {"form": form, "error": error, "next": target})
    if fresh:
        session.keep_login(request, response, context)
    return response


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
