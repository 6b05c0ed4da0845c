"""The console's session: a signed cookie holding the API credentials, checked per request.

Signing in with ``org``, ``sandbox``, ``apiKey`` and ``accessToken`` proves the same thing
as the API's four headers; the cookie then carries those four (signed with itsdangerous,
``HttpOnly``, ``SameSite=Lax``, path ``/console``) and expires when the token does. Every
request authenticates them again through the root's :class:`Authenticator`, exactly as
an API call would, so an expired token or a revoked sandbox grant ends the session, and
a page is scoped to that org and sandbox like the API.

Before signing in, a short-lived cookie holds only the CSRF value of the login form.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from nextoffer.errors import AuthError
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal

COOKIE = "nextoffer_console"
LOGIN_COOKIE = "nextoffer_console_login"
PATH = "/console"
#: How long the login form's CSRF value lives (a sign-in takes less).
LOGIN_SECONDS = 3600


def nextoffer(request: Request) -> NextOffer:
    value: NextOffer = request.app.state.nextoffer
    return value


def _serializer(request: Request, salt: str) -> URLSafeTimedSerializer:
    secret = nextoffer(request).auth.session_secret("console")
    return URLSafeTimedSerializer(secret, salt=salt)


def _read(request: Request, name: str, salt: str, max_age: int) -> dict[str, Any] | None:
    raw = request.cookies.get(name)
    if not raw:
        return None
    try:
        data = _serializer(request, salt).loads(raw, max_age=max_age)
    except BadSignature:
        return None
    return data if isinstance(data, dict) else None


def _write(request: Request, response: Response, name: str, salt: str, data: Any, age: int) -> None:
    response.set_cookie(
        name,
        _serializer(request, salt).dumps(data),
        max_age=max(age, 0),
        path=PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


@dataclass(frozen=True, slots=True)
class Visitor:
    """A signed-in user of the console: the API caller, its container, its CSRF context."""

    principal: Principal
    container_id: str
    #: The session's values; ``csrf`` is the secret WTForms signs form tokens with.
    data: dict[str, Any]

    @property
    def user(self) -> str:
        return self.principal.user


def headers_of(data: dict[str, Any]) -> dict[str, str]:
    """The API headers these session values stand for."""
    return {
        "authorization": f"Bearer {data.get('accessToken', '')}",
        "x-api-key": str(data.get("apiKey", "")),
        "x-gw-ims-org-id": str(data.get("org", "")),
        "x-sandbox-name": str(data.get("sandbox", "")),
    }


def current(request: Request) -> Visitor | None:
    """The signed-in visitor, or None (no cookie, a bad signature, an expired token)."""
    data = _read(request, COOKIE, "session", max_age=366 * 86400)
    if data is None or not isinstance(data.get("csrf"), str):
        return None
    try:
        principal = nextoffer(request).auth.authenticate(headers_of(data))
    except AuthError:
        return None
    container_id = data.get("containerId")
    if not isinstance(container_id, str):
        return None
    return Visitor(principal, container_id, data)


def new_session(values: dict[str, str], container_id: str) -> dict[str, Any]:
    """A session's values for credentials :meth:`Authenticator.authenticate` accepted:
    a new CSRF secret each time (forms of an earlier session are not this one's)."""
    return {**values, "containerId": container_id, "csrf": secrets.token_hex(20)}


def sign_in(request: Request, response: Response, data: dict[str, Any]) -> None:
    """Set the session cookie holding ``data`` (:func:`new_session`)."""
    expires = nextoffer(request).auth.expires_at(str(data["accessToken"]))
    _write(request, response, COOKIE, "session", data, expires - int(time.time()))
    response.delete_cookie(LOGIN_COOKIE, path=PATH)


def switch_container(request: Request, response: Response, visitor: Visitor, cid: str) -> None:
    """Keep the session, pointed at another container of the same org and sandbox."""
    expires = nextoffer(request).auth.expires_at(str(visitor.data["accessToken"]))
    data = {**visitor.data, "containerId": cid}
    _write(request, response, COOKIE, "session", data, expires - int(time.time()))


#: How long the message a redirect carries (``flash``) may be shown: the page after it.
FLASH_SECONDS = 60


def flash_token(request: Request, text: str) -> str:
    """``text`` signed for the next page's banner: a link from elsewhere cannot put its
    own words there (a plain ``?flash=`` could, on any page, the sign-in page too)."""
    return _serializer(request, "flash").dumps(text)


def flash_text(request: Request, token: str | None) -> str | None:
    """The banner's text of a :func:`flash_token` at most :data:`FLASH_SECONDS` old."""
    if not token:
        return None
    try:
        text = _serializer(request, "flash").loads(token, max_age=FLASH_SECONDS)
    except BadSignature:  # forged, or expired (SignatureExpired is one)
        return None
    return text if isinstance(text, str) else None


#: New-object forms remembered per session with the object each created: the same form
#: sent again (the browser's Back, then Create) opens that object instead of making a
#: second one. The latest are kept; the cookie stays small.
CREATED_KEPT = 20


def created_by(visitor: Visitor, once: str | None) -> str | None:
    """The instance id a new-object form (its ``once`` value) already created, if any."""
    made = visitor.data.get("created")
    found = made.get(once) if isinstance(made, dict) and once else None
    return found if isinstance(found, str) else None


def remember_created(
    request: Request, response: Response, visitor: Visitor, once: str, instance_id: str
) -> None:
    """Keep ``once`` → ``instance_id`` in the session cookie (see :data:`CREATED_KEPT`);
    a value no form of the console makes (longer than 64 characters) is not kept."""
    if len(once) > 64:
        return
    made = dict(visitor.data.get("created") or {})
    made[once] = instance_id
    while len(made) > CREATED_KEPT:
        made.pop(next(iter(made)))
    expires = nextoffer(request).auth.expires_at(str(visitor.data.get("accessToken", "")))
    data = {**visitor.data, "created": made}
    _write(request, response, COOKIE, "session", data, expires - int(time.time()))


#: How long what a form held when its session had ended waits for the sign-in that
#: brings it back (as long as the sign-in form's own token lives).
DRAFT_SECONDS = LOGIN_SECONDS
#: The most such a form may hold, its values as JSON: an offer is at most 300 KB, and
#: the sign-in page carries the values there and back. A larger one is not kept.
DRAFT_BYTES = 512 * 1024

#: A form's values in their order, each name as often as it was sent (a multiple select).
Values = list[tuple[str, str]]
#: Whom a page was shown to: its org, its sandbox and the user signed in.
Owner = tuple[str, str, str]


def owner_of(visitor: Visitor) -> Owner:
    principal = visitor.principal
    return (principal.org, principal.sandbox, principal.user)


def owner_token(request: Request, visitor: Visitor) -> str:
    """Whom this page is shown to, signed, for its forms to carry (``owner``): a form sent
    after its session ended says whose it is, when no session does any more (the cookie
    is gone with the token, or another user's has replaced it)."""
    return str(_serializer(request, "owner").dumps(list(owner_of(visitor))))


def owner_in(request: Request, token: Any) -> Owner | None:
    """The :func:`owner_token` a form carried; None when it carried none this server signed."""
    if not isinstance(token, str) or not token or len(token) > 4096:
        return None
    try:
        data = _serializer(request, "owner").loads(token)
    except BadSignature:
        return None
    return _owner(data)


def _owner(data: Any) -> Owner | None:
    """An :data:`Owner` read back from signed JSON (None: not one)."""
    if not isinstance(data, list) or len(data) != 3 or not all(isinstance(v, str) for v in data):
        return None
    return (data[0], data[1], data[2])


@dataclass(frozen=True, slots=True)
class Draft:
    """What a form sent after its session ended left for the sign-in that follows."""

    #: The form's editor (its values come back in it), or the page of a button.
    path: str
    values: Values
    #: Who sent it (:func:`owner_in`): no one else's sign-in brings it back.
    owner: Owner
    #: A button's form (delete, a status, revert) was not done: what this says was not.
    undone: str | None = None

    def is_for(self, visitor: Visitor) -> bool:
        return self.owner == owner_of(visitor)


def draft_token(request: Request, draft: Draft) -> str | None:
    """``draft`` signed for the sign-in page to carry back (None: too large). Signed, so
    that the sign-in restores only what this server kept; the page itself holds it, not a
    cookie (a form's text outgrows a cookie) nor this process (the sign-in may reach
    another worker)."""
    data = {
        "path": draft.path,
        "values": [[name, value] for name, value in draft.values],
        "owner": list(draft.owner),
        "undone": draft.undone,
    }
    if len(json.dumps(data, ensure_ascii=False).encode("utf-8")) > DRAFT_BYTES:
        return None
    return str(_serializer(request, "draft").dumps(data))


def draft_of(request: Request, token: str | None) -> Draft | None:
    """The :class:`Draft` of a :func:`draft_token` at most :data:`DRAFT_SECONDS` old."""
    if not token or len(token) > 2 * DRAFT_BYTES:
        return None
    try:
        data = _serializer(request, "draft").loads(token, max_age=DRAFT_SECONDS)
    except BadSignature:  # forged, or expired (SignatureExpired is one)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("path"), str):
        return None
    owner = _owner(data.get("owner"))
    if owner is None:
        return None  # kept before drafts named their owner: whose it is, no one knows
    values = [
        (pair[0], pair[1])
        for pair in data.get("values") or []
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, str) for v in pair)
    ]
    undone = data.get("undone")
    return Draft(
        data["path"],
        values,
        owner,
        undone if isinstance(undone, str) else None,
    )


def sign_out(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH)


def login_context(request: Request) -> tuple[dict[str, Any], bool]:
    """The login form's CSRF context, and whether it is new (then :func:`keep_login`)."""
    data = _read(request, LOGIN_COOKIE, "login", max_age=LOGIN_SECONDS)
    if data is not None and isinstance(data.get("csrf"), str):
        return data, False
    return {"csrf": secrets.token_hex(20)}, True


def keep_login(request: Request, response: Response, context: dict[str, Any]) -> None:
    _write(request, response, LOGIN_COOKIE, "login", context, LOGIN_SECONDS)
