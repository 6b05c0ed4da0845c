"""Identity maps as clients send them: ``{"<namespace>": [{"id": "…"}, …]}``.

Adobe's requests spell the id ``xdm:id`` (the Decisions API) or ``id`` (Web SDK, JO);
both are read. ``primary`` and other members are ignored.
"""

from __future__ import annotations

from typing import Any

import jsonpointer

from nextoffer.errors import Unprocessable

MAX_IDENTITIES = 50


def parse_identity_map(value: Any, *, pointer: str) -> list[tuple[str, str]]:
    """``[(namespace, id), …]`` in the order given; 422 naming the bad member otherwise."""
    if not isinstance(value, dict) or not value:
        raise Unprocessable(
            "an identity map must be a non-empty object of namespace → identities", pointer=pointer
        )
    found: list[tuple[str, str]] = []
    # The member's pointer is made only for an error: this runs on every decision.
    for namespace, entries in value.items():
        if not namespace or not isinstance(entries, list) or not entries:
            raise Unprocessable(
                f"namespace {namespace!r} needs a non-empty list of identities",
                pointer=_member(pointer, namespace),
            )
        for index, entry in enumerate(entries):
            identity = entry.get("xdm:id", entry.get("id")) if isinstance(entry, dict) else None
            if not isinstance(identity, str) or not identity or len(identity) > 1024:
                raise Unprocessable(
                    "each identity needs an id (a string of 1 to 1024 characters)",
                    pointer=f"{_member(pointer, namespace)}/{index}",
                )
            if (namespace, identity) not in found:
                found.append((namespace, identity))
    if len(found) > MAX_IDENTITIES:
        raise Unprocessable(f"at most {MAX_IDENTITIES} identities per profile", pointer=pointer)
    return found


def _member(pointer: str, name: str) -> str:
    """The JSON pointer of member ``name`` under ``pointer`` (RFC 6901 escapes)."""
    return f"{pointer}/{jsonpointer.escape(name)}"
