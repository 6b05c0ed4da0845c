"""The one error tree of nextoffer.

Every error the service can answer with is a subclass of :class:`NextOfferError`.
Each class carries its HTTP status and its CLI exit code; the API maps the tree to
responses in one place (``nextoffer.api.errors``) and the CLI to exit codes in one
place (``nextoffer.cli``). No route and no command writes its own error response.

::

    NextOfferError                 500  exit 1   something we did not foresee
    ├── AuthError                  4xx  exit 3   gateway-shaped body {"error_code", "message"}
    ├── BadRequest                 400  exit 2   malformed request: headers, JSON, query
    │   ├── UnsupportedMediaType   415  exit 2   Content-Type we do not accept
    │   └── PayloadTooLarge        413  exit 2   a body or object over a guardrail
    ├── NotFound                   404  exit 4   no such thing *for this tenant*
    ├── Conflict                   409  exit 5   stale If-Match, a delete that others reference
    ├── Unprocessable              422  exit 2   well-formed but invalid: schema, references,
    │   │                                        immutable properties
    │   └── PQLError               422  exit 2   a rule that does not parse or check; line+column
    ├── TooManyRequests            429  exit 6   a public endpoint's rate; ``retry_after`` seconds
    └── Unavailable                503  exit 6   a store is down; ``retry_after`` seconds
        ├── DatabaseRefused        503  exit 3   the database refused our user, password or name
        ├── IdentityClaimed        503  exit 6   a new identity claimed by a concurrent write
        └── CountersLost           503  exit 6   Redis no longer holds a container's cap counters
            └── CountersNotMoved   503  exit 6   the database still holds them (Redis added)

An error may carry ``internal`` text besides its ``detail``: what only an operator should
read, such as a driver's message naming a host, a port, a role or a file. The CLI prints
it after the detail (:meth:`NextOfferError.for_operator`); the API logs it and never
answers it.

``NotModified`` (304) is not an error and lives with the routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self


class NextOfferError(Exception):
    """Root of every error nextoffer raises on purpose."""

    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    title: ClassVar[str] = "Internal Server Error"

    def __init__(
        self,
        detail: str,
        *,
        pointer: str | None = None,
        internal: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        #: JSON pointer (RFC 6901) to the offending field of the request, when there is one.
        self.pointer = pointer
        #: What the operator alone reads (logged, printed by the CLI; never answered).
        self.internal = internal
        #: More members for the problem+json body (e.g. ``referencedBy``, ``errors``).
        self.extra = extra

    @property
    def type_slug(self) -> str:
        return type(self).__name__

    def reworded(self, detail: str) -> Self:
        """This error (its class, status, exit code and members) saying ``detail``."""
        self.detail = detail
        self.args = (detail,)
        return self

    def for_operator(self) -> str:
        """The detail, followed by the internal text when there is one."""
        return f"{self.detail}: {self.internal}" if self.internal else self.detail

    def __str__(self) -> str:
        """What logs and tracebacks show: :meth:`for_operator`. (Answers use ``detail``.)"""
        return self.for_operator()


class AuthError(NextOfferError):
    """Authentication or tenancy failed before the request reached a service.

    Answered in Adobe's gateway shape ``{"error_code": "...", "message": "..."}``.
    """

    exit_code = 3
    title = "Unauthorized"

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.error_code = error_code
        self.message = message


class BadRequest(NextOfferError):
    """The request itself is malformed (headers, JSON syntax, query parameters)."""

    status = 400
    exit_code = 2
    title = "Bad Request"


class UnsupportedMediaType(BadRequest):
    """The Content-Type is missing or not one this endpoint accepts."""

    status = 415
    title = "Unsupported Media Type"


class PayloadTooLarge(BadRequest):
    """A body, an object or a collection exceeds a documented guardrail."""

    status = 413
    title = "Payload Too Large"


class NotFound(NextOfferError):
    """No such container, instance or object in the caller's org and sandbox.

    Another tenant's object is reported exactly like a missing one.
    """

    status = 404
    exit_code = 4
    title = "Not Found"


class MethodNotAllowed(NextOfferError):
    """The path is served, but not with this method (the answer names those it is)."""

    status = 405
    title = "Method Not Allowed"


class Conflict(NextOfferError):
    """The write conflicts with the stored state (stale etag, referenced by others)."""

    status = 409
    exit_code = 5
    title = "Conflict"


class Unprocessable(NextOfferError):
    """The body is well-formed but invalid: schema, references, immutable properties."""

    status = 422
    exit_code = 2
    title = "Unprocessable Entity"


class PQLError(Unprocessable):
    """A PQL rule or formula is invalid (syntax, unknown function, arity, type, limit).

    ``line`` and ``column`` are 1-based and point into ``source`` when it is known.
    """

    title = "Invalid Rule"

    def __init__(
        self,
        message: str,
        *,
        line: int = 1,
        column: int = 1,
        source: str | None = None,
        pointer: str | None = None,
    ) -> None:
        super().__init__(f"{message} (line {line}, column {column})", pointer=pointer)
        self.message = message
        self.line = line
        self.column = column
        self.source = source


class TooManyRequests(NextOfferError):
    """A public endpoint's rate limit was reached; retry after ``retry_after`` seconds."""

    status = 429
    exit_code = 6
    title = "Too Many Requests"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(NextOfferError):
    """A backing store is unreachable; the client should retry after ``retry_after`` s."""

    status = 503
    exit_code = 6
    title = "Service Unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1, internal: str | None = None) -> None:
        super().__init__(detail, internal=internal)
        self.retry_after = retry_after


class DatabaseRefused(Unavailable):
    """The database server answered and refused us: a wrong user or password, a database
    that does not exist, an address its access rules do not admit. Trying again will not
    help; its own exit code tells a script so. Over HTTP it is a 503 like any outage: the
    fault is the server's configuration, not the request."""

    exit_code = 3

    def __init__(self, internal: str) -> None:
        super().__init__(
            "the database refused the connection (a wrong user, password or database "
            "name, or its access rules)",
            retry_after=60,
            internal=f"{internal}; check the database URL",
        )


class IdentityClaimed(Unavailable):
    """Another transaction claimed an identity this one read as free (PostgreSQL: two
    writes creating a profile for one new identity at once). The write is redone
    (``Store.write``); a client hears of it only when every attempt lost a claim."""


class CountersLost(Unavailable):
    """Redis no longer holds the cap counters of these containers: their marker is gone
    (``storage/redis_markers.py``). Capped offers count as capped until an operator
    restores Redis or accepts the loss."""

    def __init__(self, containers: Sequence[str]) -> None:
        named = ", ".join(sorted(containers))
        super().__init__(
            f"Redis lost the cap counters of container {named} (its marker is gone: a "
            "restart without its data, or another Redis); capped offers count as capped "
            "until Redis is restored from its backup or the loss accepted with "
            "'nextoffer admin counters --accept-loss' (docs/deploy.md)",
            retry_after=60,
        )
        self.containers = tuple(sorted(containers))


class CountersNotMoved(CountersLost):
    """The database still holds cap counters of these containers, counted before the
    deployment added Redis (``storage/redis_markers.py``): Redis holds none of them.
    Capped offers count as capped, as for a loss, until they are moved into Redis."""

    def __init__(self, containers: Sequence[str]) -> None:
        named = ", ".join(sorted(containers))
        Unavailable.__init__(
            self,
            f"the cap counters of container {named} are still in the database (counted "
            "before Redis was added), not in Redis; capped offers count as capped until "
            "they are moved with 'nextoffer admin counters --into-redis' (docs/deploy.md)",
            retry_after=60,
        )
        self.containers = tuple(sorted(containers))
