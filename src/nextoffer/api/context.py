"""What a route needs from the application: the root, the settings, the caller."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from nextoffer.api.bodies import read_json
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal


def nextoffer(request: Request) -> NextOffer:
    """The app's :class:`~nextoffer.root.NextOffer` (opened in the lifespan)."""
    value: NextOffer = request.app.state.nextoffer
    return value


def authenticate(request: Request) -> Principal:
    """The caller; verified tokens and clients are cached, so this rarely does IO."""
    return nextoffer(request).auth.authenticate(request.headers)


async def body_json(request: Request) -> Any:
    settings = nextoffer(request).settings
    return await read_json(
        request, max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth
    )
