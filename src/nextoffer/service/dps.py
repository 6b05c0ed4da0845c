"""The dps Offer Library (offer-api-dps.md): the same library as xcore, named by ``@id``.

dps paths carry no container: the caller's sandbox names it (its decisioning container,
the one ``bootstrap`` creates). Every use case is the xcore one — :class:`Repository` for
writes, validation, references and etags, :class:`Search` for pages — with the dps form
translated on the way in and out by :mod:`nextoffer.repository.dps`. Errors that point
into the stored body are re-pointed into the body the client sent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import replace
from threading import Lock
from typing import Any
from urllib.parse import quote

import jsonpointer

from nextoffer.errors import BadRequest, Conflict, NextOfferError, NotFound, Unprocessable
from nextoffer.repository import dps
from nextoffer.repository.dps_fields import RESOURCES, Resource
from nextoffer.repository.objects import SchemaRef
from nextoffer.repository.query import ListQuery
from nextoffer.repository.records import ContainerRecord, InstanceRecord
from nextoffer.service.auth import Principal
from nextoffer.service.offload import in_pool
from nextoffer.service.repository import Repository
from nextoffer.service.search import Page, Search

#: The container type the dps API and ``/data/core/ods`` work in.
DECISIONING = "decisioning"
#: How long a sandbox's decisioning container is remembered, and for how many sandboxes.
CONTAINER_CACHE_SECONDS = 5.0
CONTAINER_CACHE_SIZE = 4096


def resource_for(path: str, offer_type: str | Sequence[str] | None) -> Resource:
    """The resource of ``/dps/<path>`` (``offer-type`` is case-insensitive, required on
    ``/offers`` and ignored elsewhere); a 404 for an unknown path, a 400 for a bad type.

    ``offer-type`` may be given as every value the request sent: empty ones are absent, and
    two different ones on ``/offers`` are a 400 (which offers a DELETE removes must not
    depend on the order of the parameters)."""
    candidates = [r for r in RESOURCES if r.path == path]
    if not candidates:
        raise NotFound(f"/data/core/dps/{path} is not a dps resource")
    if candidates[0].offer_type is None:
        return candidates[0]
    sent = [offer_type] if isinstance(offer_type, str) else list(offer_type or ())
    wanted = list(dict.fromkeys(v.strip().lower() for v in sent if v.strip()))
    if len(wanted) > 1:
        raise BadRequest(
            f"offer-type is given as {', '.join(wanted)}; give one", pointer="offer-type"
        )
    known = [r.offer_type for r in candidates]
    for resource in candidates:
        if resource.offer_type == (wanted[0] if wanted else ""):
            return resource
    raise BadRequest(
        f"offer-type is required here: one of {', '.join(str(k) for k in known)}",
        pointer="offer-type",
    )


_REQUIRED = re.compile(r"'([^']+)' is required")


def _required(resource: Resource, pointer: str, message: str) -> str:
    """``'xdm:name' is required`` (at the object's pointer) in dps names."""

    def name(match: re.Match[str]) -> str:
        member = dps.dps_pointer(resource, f"{pointer.rstrip('/')}/{match.group(1)}")
        return f"'{member.rsplit('/', 1)[-1]}' is required"

    return _REQUIRED.sub(name, message)


def _renamed(old: str, new: str, message: str) -> str:
    """``message`` with the stored names of ``old``'s segments in the dps spelling of
    ``new``'s (``xdm:limit must be …`` at ``/xdm:frequencyCappingConstraints/0/xdm:limit``
    → ``limit must be …``): checks that name the member they refuse spoke xcore."""
    pairs = {
        jsonpointer.unescape(a): jsonpointer.unescape(b)
        for a, b in zip(old.split("/"), new.split("/"), strict=False)
        if a != b
    }
    for stored in sorted(pairs, key=len, reverse=True):
        message = re.sub(rf"(?<![\w:@$]){re.escape(stored)}(?![\w:])", pairs[stored], message)
    return message


def _in_dps_names(resource: Resource, old: str, new: str, message: str) -> str:
    """An error message about the stored pointer ``old`` told about ``new`` in dps names."""
    return _renamed(old, new, _required(resource, old, message.replace(old, new)))


@contextmanager
def _pointing_into(resource: Resource) -> Iterator[None]:
    """Re-point errors about the stored body into the dps body."""
    try:
        yield
    except NextOfferError as exc:
        if exc.pointer is not None:
            old, new = exc.pointer, dps.dps_pointer(resource, exc.pointer)
            exc.pointer = new
            exc.detail = _in_dps_names(resource, old, new, exc.detail)
        errors = exc.extra.get("errors")
        if isinstance(errors, list):
            for error in errors:
                if isinstance(error, dict) and isinstance(error.get("pointer"), str):
                    old = error["pointer"]
                    error["pointer"] = dps.dps_pointer(resource, old)
                    exc.detail = _renamed(
                        old, error["pointer"], exc.detail.replace(old, error["pointer"])
                    )
                    if isinstance(error.get("message"), str):
                        error["message"] = _in_dps_names(
                            resource, old, error["pointer"], error["message"]
                        )
        exc.reworded(exc.detail)  # its args too
        raise


def dps_href(schema_id: str, at_id: str) -> str | None:
    """The path of an object relative to ``/data/core/dps`` (as the pages' ``_links``)."""
    for resource in RESOURCES:
        if resource.type.schema_id == schema_id:
            query = f"?offer-type={resource.offer_type}" if resource.offer_type else ""
            return f"/{resource.path}/{quote(at_id, safe=':')}{query}"
    return None


def _referrers_in_dps_terms(exc: Conflict) -> None:
    """A refused delete's ``referencedBy`` with each referrer's ``id`` and its ``href`` on
    the dps API: the repository's ``href`` is an xcore path
    (``/{container}/instances/{uuid}``) that means nothing appended to ``/data/core/dps``."""
    referrers = exc.extra.get("referencedBy")
    if not isinstance(referrers, list):
        return
    for index, referrer in enumerate(referrers):
        if not isinstance(referrer, dict):
            continue
        href = dps_href(str(referrer.get("schema")), str(referrer.get("@id")))
        if href is not None:
            referrers[index] = {"id": referrer.get("@id"), **referrer, "href": href}


def _of_kind(resource: Resource, record: InstanceRecord) -> InstanceRecord:
    if record.schema_id != resource.type.schema_id:
        # Another kind's id: as missing here as any unknown id.
        raise NotFound(f"{record.at_id} does not exist")
    return record


class DpsLibrary:
    def __init__(
        self,
        repository: Repository,
        search: Search,
        *,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repository = repository
        self._search = search
        self._executor = executor
        self._clock = clock
        #: (org, sandbox) → (when read, its decisioning container): a container never
        #: changes tenant, and one is added only by ``bootstrap``, so a short-lived answer
        #: spares every dps call a read of the containers.
        self._containers: dict[tuple[str, str], tuple[float, ContainerRecord]] = {}
        self._lock = Lock()

    def _remembered(self, principal: Principal) -> ContainerRecord | None:
        with self._lock:
            cached = self._containers.get((principal.org, principal.sandbox))
        if cached is not None and self._clock() - cached[0] < CONTAINER_CACHE_SECONDS:
            return cached[1]
        return None

    def container(self, principal: Principal) -> ContainerRecord:
        """The caller's sandbox's decisioning container (the oldest, if there are several)."""
        remembered = self._remembered(principal)
        if remembered is not None:
            return remembered
        key = (principal.org, principal.sandbox)
        now = self._clock()
        found = [
            c for c in self._repository.containers(principal) if c.container_type == DECISIONING
        ]
        if not found:
            raise NotFound(
                f"sandbox {principal.sandbox} has no decisioning container; "
                "create one with `nextoffer admin bootstrap`"
            )
        container = min(found, key=lambda c: (c.audit.created, c.container_id))
        with self._lock:
            if len(self._containers) >= CONTAINER_CACHE_SIZE:
                self._containers.clear()
            self._containers[key] = (now, container)
        return container

    def _record(self, principal: Principal, resource: Resource, at_id: str) -> InstanceRecord:
        container = self.container(principal)
        record = self._repository.by_at_id(principal, container.container_id, at_id)
        return _of_kind(resource, record)

    def create(self, principal: Principal, resource: Resource, body: Any) -> InstanceRecord:
        if isinstance(body, dict) and "@id" in body:
            # Pointed at what was sent: the stored form's /@id reads as /id in dps terms.
            raise Unprocessable(
                "@id is assigned by the repository and cannot be sent on create", pointer="/@id"
            )
        container = self.container(principal)
        schema = SchemaRef(resource.type, None, resource.type.schema_id)
        with _pointing_into(resource):
            return self._repository.create(
                principal,
                container.container_id,
                schema,
                dps.create_body(resource, body),
                scheme="dps",
            )

    def get(self, principal: Principal, resource: Resource, at_id: str) -> InstanceRecord:
        return self._record(principal, resource, at_id)

    async def get_async(
        self, principal: Principal, resource: Resource, at_id: str
    ) -> InstanceRecord:
        """:meth:`get` from an event loop: a remembered container and a read on the
        decision path need no thread (as xcore's GET of an instance)."""
        container = self._remembered(principal)
        if container is None:
            container = await in_pool(self._executor, self.container, principal)
        record = await self._repository.by_at_id_async(principal, container.container_id, at_id)
        return _of_kind(resource, record)

    def patch(
        self,
        principal: Principal,
        resource: Resource,
        at_id: str,
        operations: Any,
        *,
        if_match: int | None,
    ) -> InstanceRecord:
        record = self._record(principal, resource, at_id)
        with _pointing_into(resource):
            return self._repository.patch(
                principal,
                record.container_id,
                record.instance_id,
                operations,
                schema=None,
                if_match=if_match,
                view=dps.patch_view(resource),
            )

    def delete(
        self, principal: Principal, resource: Resource, at_id: str, *, if_match: int | None
    ) -> InstanceRecord:
        record = self._record(principal, resource, at_id)
        try:
            return self._repository.delete(
                principal, record.container_id, record.instance_id, if_match=if_match
            )
        except Conflict as exc:
            _referrers_in_dps_terms(exc)
            raise

    def find(self, principal: Principal, query: ListQuery) -> tuple[Page, bool]:
        """One page, and whether items follow it (one more item is read to know)."""
        container = self.container(principal)
        page = self._search.find(
            principal, container.container_id, replace(query, limit=query.limit + 1)
        )
        more = len(page.records) > query.limit
        if more:
            page = Page(page.records[: query.limit], page.total, page.sort_values[: query.limit])
        return page, more
