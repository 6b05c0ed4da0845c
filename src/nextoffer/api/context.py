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


#: Header names as text, by their bytes: clients send the same few names again and again.
_NAMES: dict[bytes, str] = {}
_NAMES_KEPT = 256


def header_map(request: Request) -> dict[str, str]:
    """The request's headers in a plain dict, the first of a repeated name winning (as
    ``request.headers.get`` answers): one pass over them, then each look-up is a dict's,
    where ``request.headers.get`` walks the list again per name."""
    found: dict[str, str] = {}
    names = _NAMES
    for name, value in reversed(request.scope["headers"]):
        text = names.get(name)
        if text is None:
            text = name.decode("latin-1")
            if len(names) < _NAMES_KEPT:
                names[name] = text
        found[text] = value.decode("latin-1")
    return found


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
