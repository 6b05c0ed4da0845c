"""What changed between two revisions of an instance: a list of readable changes.

Pure: the JSON Patch (RFC 6902) from one body to the next, each operation with the value
it replaced, so a history can say "xdm:name: 'Old' → 'New'".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonpatch
import jsonpointer


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{"op", "path", "from"?, "value"?}]`` turning ``before`` into ``after``; every
    top-level member ``added`` when there is no ``before`` (a create)."""
    if before is None:
        return [
            {"op": "add", "path": "/" + jsonpointer.escape(key), "value": value}
            for key, value in after.items()
            if key != "@id"
        ]
    out: list[dict[str, Any]] = []
    for operation in jsonpatch.make_patch(dict(before), dict(after)):
        change: dict[str, Any] = {"op": operation["op"], "path": operation["path"]}
        if operation["op"] in ("replace", "remove"):
            change["from"] = jsonpointer.resolve_pointer(before, operation["path"], None)
        if operation["op"] in ("move", "copy"):
            # Moves read poorly in a history: say what now sits at the path instead.
            change = {
                "op": "replace",
                "path": operation["path"],
                "from": jsonpointer.resolve_pointer(before, operation["path"], None),
            }
            change["value"] = jsonpointer.resolve_pointer(after, operation["path"], None)
        elif "value" in operation:
            change["value"] = operation["value"]
        out.append(change)
    return out
