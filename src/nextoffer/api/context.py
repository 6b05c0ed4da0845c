"""What a route needs from the application: the root, the settings, the caller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from nextoffer.api.bodies import read_json
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal


def nextoffer(request: Request) -> NextOffer:
    """The app's :class:`~nextoffer.root.NextOffer` (opened in the lifespan)."""
    value: NextOffer = request.app.state.nextoffer
    return value


def header_map(request: Request) -> dict[str, str]:
    """The request's headers in a plain dict, the first of a repeated name winning (as
    ``request.headers.get`` answers): one pass over them, then each look-up is a dict's,
    where ``request.headers.get`` walks the list again per name."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in reversed(request.scope["headers"])
    }


def authenticate(
    request: Request,
    *,
    no: NextOffer | None = None,
    headers: Mapping[str, str] | None = None,
) -> Principal:
    """The caller; verified tokens and clients are cached, so this rarely does IO."""
    no = no or nextoffer(request)
    return no.auth.authenticate(headers if headers is not None else request.headers)


async def body_json(
    request: Request, *, no: NextOffer | None = None, headers: Mapping[str, str] | None = None
) -> Any:
    settings = (no or nextoffer(request)).settings
    return await read_json(
        request,
        max_bytes=settings.max_body_bytes,
        max_depth=settings.max_json_depth,
        headers=headers,
    )
