"""JSON responses serialised with orjson, under the media type each endpoint promises."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response


def json_response(
    content: Any,
    *,
    status: int = 200,
    media_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        orjson.dumps(content), status_code=status, media_type=media_type, headers=headers
    )
