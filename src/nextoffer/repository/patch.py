"""JSON Patch (RFC 6902) applied to the HAL form of an instance (spec §4.6).

Pointers address the HAL resource, so instance properties are under ``/_instance/…``.
Only ``_instance`` may change, and within it not ``@id``.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from nextoffer.errors import BadRequest, Conflict, Unprocessable

#: Limit on operations in one PATCH, so one request cannot make us do unbounded work.
MAX_OPERATIONS = 1000


def apply(hal: dict[str, Any], operations: Any) -> dict[str, Any]:
    """Return the patched ``_instance``; raise our errors for bad or disallowed patches."""
    if not isinstance(operations, list):
        raise BadRequest("a JSON Patch body must be an array of operations", pointer="/")
    if len(operations) > MAX_OPERATIONS:
        raise BadRequest(f"a JSON Patch may hold at most {MAX_OPERATIONS} operations", pointer="/")
    for index, op in enumerate(operations):
        if (
            not isinstance(op, dict)
            or not isinstance(op.get("op"), str)
            or not isinstance(op.get("path"), str)
        ):
            raise BadRequest(
                f"operation {index} needs an 'op' and a 'path' string", pointer=f"/{index}"
            )
    try:
        patch = jsonpatch.JsonPatch(operations)
        patched = patch.apply(copy.deepcopy(hal))
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Conflict(f"a JSON Patch test operation failed: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise Unprocessable(f"the JSON Patch cannot be applied: {exc}") from exc
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise Unprocessable(f"the JSON Patch cannot be applied: {exc}") from exc
    if not isinstance(patched, dict):
        # An operation on the root path ("") replaced the whole resource.
        raise Unprocessable("the patch must leave the resource an object", pointer="/")
    for key in set(hal) | set(patched):
        if key != "_instance" and patched.get(key) != hal.get(key):
            raise Unprocessable(f"{key} is not editable", pointer=f"/{key}")
    instance = patched.get("_instance")
    if not isinstance(instance, dict):
        raise Unprocessable("the patch must leave _instance an object", pointer="/_instance")
    if instance.get("@id") != hal["_instance"].get("@id"):
        raise Unprocessable("@id is immutable and cannot be changed", pointer="/_instance/@id")
    return instance
