"""JSON Patch (RFC 6902) applied to the form a client reads an instance in (spec §4.6).

A :class:`View` is that form: xcore's HAL resource (:data:`HAL`, pointers under
``/_instance/…``) or dps's plain document (``repository/dps.py``). Only the object's own
members may change, never its ``@id`` or envelope; the view turns the patched document
back into the stored body.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer

from nextoffer.errors import BadRequest, Conflict, Unprocessable
from nextoffer.repository import hal
from nextoffer.repository.records import InstanceRecord

#: Limit on operations in one PATCH, so one request cannot make us do unbounded work.
MAX_OPERATIONS = 1000


@dataclass(frozen=True, slots=True)
class View:
    """How a client sees an instance it patches."""

    #: The document the patch's pointers address.
    render: Callable[[InstanceRecord], dict[str, Any]]
    #: (the stored instance, the document before, the patched document) → the new stored
    #: body, ``@id`` included.
    body: Callable[[InstanceRecord, dict[str, Any], dict[str, Any]], dict[str, Any]]
    #: Where the body's members sit in the document, for error pointers (``/_instance``).
    prefix: str
    #: ``replace`` of a member the object lacks adds it (dps: Adobe's documented updates
    #: replace ``/description`` on objects created without one); RFC 6902 refuses it.
    replace_adds: bool = False


def operations_of(operations: Any) -> list[dict[str, Any]]:
    """The operations, checked for shape; a 400 for anything that is not a patch."""
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
    return operations


def _adds_missing(document: Any, op: dict[str, Any]) -> dict[str, Any]:
    """``replace`` of a missing member of an existing object, as an ``add``."""
    if op["op"] != "replace":
        return op
    try:
        pointer = jsonpointer.JsonPointer(op["path"])
        if not pointer.parts:
            return op
        parent = jsonpointer.JsonPointer.from_parts(pointer.parts[:-1]).resolve(document)
    except jsonpointer.JsonPointerException:
        return op
    if isinstance(parent, dict) and pointer.parts[-1] not in parent:
        return {**op, "op": "add"}
    return op


def apply(record: InstanceRecord, operations: Any, view: View) -> dict[str, Any]:
    """The new stored body of ``record``; our errors for bad or disallowed patches."""
    ops = operations_of(operations)
    document = view.render(record)
    try:
        if view.replace_adds:
            patched: Any = copy.deepcopy(document)
            for op in ops:
                patched = jsonpatch.JsonPatch([_adds_missing(patched, op)]).apply(patched)
        else:
            patched = jsonpatch.JsonPatch(ops).apply(copy.deepcopy(document))
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Conflict(f"a JSON Patch test operation failed: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise Unprocessable(f"the JSON Patch cannot be applied: {exc}") from exc
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise Unprocessable(f"the JSON Patch cannot be applied: {exc}") from exc
    if not isinstance(patched, dict):
        # An operation on the root path ("") replaced the whole resource.
        raise Unprocessable("the patch must leave the resource an object", pointer="/")
    return view.body(record, document, patched)


def _hal_body(
    _record: InstanceRecord, before: dict[str, Any], patched: dict[str, Any]
) -> dict[str, Any]:
    for key in set(before) | set(patched):
        if key != "_instance" and patched.get(key) != before.get(key):
            raise Unprocessable(f"{key} is not editable", pointer=f"/{key}")
    instance = patched.get("_instance")
    if not isinstance(instance, dict):
        raise Unprocessable("the patch must leave _instance an object", pointer="/_instance")
    if instance.get("@id") != before["_instance"].get("@id"):
        raise Unprocessable("@id is immutable and cannot be changed", pointer="/_instance/@id")
    return instance


#: The xcore view: the HAL resource; only ``/_instance/…`` may change.
HAL = View(render=lambda record: hal.resource(record), body=_hal_body, prefix="/_instance")
