"""Shared aliases. Kept tiny on purpose: names that several layers use to talk."""

from __future__ import annotations

from typing import Any, NewType

#: A container's id (a UUID string); the first path element of every repository call.
ContainerId = NewType("ContainerId", str)
#: An instance's physical id (a version-1 UUID string) used in ``/instances/{I}`` paths.
InstanceId = NewType("InstanceId", str)
#: An instance's logical id, ``xcore:<type>:<16 hex>``; what instances reference each other by.
AtId = NewType("AtId", str)

#: A JSON object as parsed from a request body.
JSONObject = dict[str, Any]
