"""Routes answered ahead of Starlette's router: the decision request.

On its way to an endpoint a request passes Starlette's exception middleware, the router
(trying each route's pattern in order), the route and its request/response wrapper:
a measurable share of a worker's time on a recorded decision (docs/benchmarks.md).
:class:`Shortcut` sits just inside the observability middleware and serves the routes it
is given directly, with the same endpoint, the same exception handlers
(``errors.exception_handlers``) and the scope keys the router would set (``route``,
``endpoint``, ``path_params``). Every other request goes on to the router unchanged, and
an error no handler takes propagates to the server-error middleware as it would there.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence, Set
from re import Pattern
from typing import Any, NamedTuple

from starlette.convertors import Convertor, StringConvertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request, Exception], Awaitable[Response]]


class _Served(NamedTuple):
    route: Route
    methods: Set[str]
    regex: Pattern[str]
    convertors: Mapping[str, Convertor[Any]] | None


class Shortcut:
    def __init__(
        self, app: ASGIApp, *, routes: Sequence[Route], handlers: Mapping[Any, Handler]
    ) -> None:
        for route in routes:
            if not inspect.iscoroutinefunction(route.endpoint):
                raise TypeError(f"{route.path}: a shortcut route needs an async endpoint")
        self.app = app
        # Per route: its methods, its pattern, and its parameters' convertors unless every
        # one is a plain string's (whose ``convert`` hands the matched text back).
        self._routes: tuple[_Served, ...] = tuple(
            _Served(
                route,
                route.methods or frozenset(),
                route.path_regex,
                None
                if all(isinstance(c, StringConvertor) for c in route.param_convertors.values())
                else route.param_convertors,
            )
            for route in routes
        )
        # As Starlette splits them: a handler for 500/Exception belongs to the outer
        # server-error middleware, the rest to the exception middleware this stands for.
        self._handlers = {k: v for k, v in handlers.items() if k not in (500, Exception)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._match(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        # Served here: what Starlette's router and request/response wrapper would do.
        served, params = found
        route = served.route
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = (
            params
            if served.convertors is None
            else {name: served.convertors[name].convert(value) for name, value in params.items()}
        )
        request = Request(scope, receive, send)
        try:
            response: Response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[_Served, dict[str, str]] | None:
        path = _route_path(scope)
        method = scope["method"]
        for served in self._routes:
            if method in served.methods:
                match = served.regex.match(path)
                if match is not None:
                    return served, match.groupdict()
        return None

    def _handler(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            if cls in self._handlers:
                return self._handlers[cls]
        return None


def _route_path(scope: Scope) -> str:
    """The path the router matches: ``path`` without a ``root_path`` prefix (as
    Starlette's private ``_utils.get_route_path`` does; not imported, being private)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path != root and path[len(root)] == "/":
        return path[len(root) :]
    return path
