"""Identity maps as clients send them: ``{"<namespace>": [{"id": "…"}, …]}``.

Adobe's requests spell the id ``xdm:id`` (the Decisions API) or ``id`` (Web SDK, JO);
both are read. ``primary`` and other members are ignored.
"""

from __future__ import annotations

import json
from typing import Any

import jsonpointer

from nextoffer.errors import Unprocessable

MAX_IDENTITIES = 50
#: The longest namespace code and identity (characters): what profiles store, on every
#: backend alike.
MAX_NAMESPACE = 255
MAX_IDENTITY = 1024


def parse_identity_map(value: Any, *, pointer: str) -> list[tuple[str, str]]:
    """``[(namespace, id), …]`` in the order given, each once; 422 naming the bad member
    otherwise. Linear in the map's size, and refused as soon as it names more identities
    than a profile takes: the Edge endpoints read a public body's map on the event loop,
    where a 1 MiB map of 70,000 entries, deduplicated through a list, held every request
    of the process for a minute."""
    if not isinstance(value, dict) or not value:
        raise Unprocessable(
            "an identity map must be a non-empty object of namespace → identities", pointer=pointer
        )
    found: dict[tuple[str, str], None] = {}  # insertion-ordered set
    # The member's pointer is made only for an error: this runs on every decision.
    for namespace, entries in value.items():
        if len(namespace) > MAX_NAMESPACE:
            raise Unprocessable(
                f"a namespace is at most {MAX_NAMESPACE} characters",
                pointer=_member(pointer, namespace),
            )
        if not namespace or not isinstance(entries, list) or not entries:
            raise Unprocessable(
                f"namespace {json.dumps(namespace, ensure_ascii=False)} needs a non-empty list"
                " of identities",
                pointer=_member(pointer, namespace),
            )
        for index, entry in enumerate(entries):
            identity = entry.get("xdm:id", entry.get("id")) if isinstance(entry, dict) else None
            if not isinstance(identity, str) or not identity or len(identity) > MAX_IDENTITY:
                raise Unprocessable(
                    f"each identity needs an id (a string of 1 to {MAX_IDENTITY} characters)",
                    pointer=f"{_member(pointer, namespace)}/{index}",
                )
            found[namespace, identity] = None
            if len(found) > MAX_IDENTITIES:
                raise Unprocessable(
                    f"at most {MAX_IDENTITIES} identities per profile", pointer=pointer
                )
    return list(found)


def _member(pointer: str, name: str) -> str:
    """The JSON pointer of member ``name`` under ``pointer`` (RFC 6901 escapes)."""
    return f"{pointer}/{jsonpointer.escape(name)}"
