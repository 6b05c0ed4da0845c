"""Access tokens: compact JWS (HS256) signed with keys kept in the database.

A token minted by ``nextoffer admin bootstrap`` is accepted by every ``nextoffer serve``
on the same database, because the signing keys live there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Claims:
    user: str
    client_id: str
    org: str
    issued_at: int
    expires_at: int
    #: When the client the token is for was made (its ``created``, to the microsecond):
    #: a client revoked and made again under the same id, even within the second, does
    #: not accept the tokens of the one before. ``None`` in tokens minted without it.
    client_made: str | None = None


class InvalidToken(Exception):
    """The token is malformed, wrongly signed, or expired (the reason is the message)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(claims: Claims, *, kid: str, secret: str) -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    payload = {
        "sub": claims.user,
        "client_id": claims.client_id,
        "org": claims.org,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
        "jti": secrets.token_hex(8),
    }
    if claims.client_made is not None:
        payload["cmade"] = claims.client_made
    signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(payload))}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def kid_of(token: str) -> str:
    try:
        header = orjson.loads(_unb64(token.split(".", 1)[0]))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidToken("the token header is not valid") from exc
    if (
        not isinstance(header, dict)
        or header.get("alg") != "HS256"
        or not isinstance(header.get("kid"), str)
    ):
        raise InvalidToken("the token header is not valid")
    return str(header["kid"])


def verify(token: str, *, secret: str, now: int) -> Claims:
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("the token is not a compact JWS")
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        signature = _unb64(parts[2])
        payload = orjson.loads(_unb64(parts[1]))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidToken("the token is not valid") from exc
    if not hmac.compare_digest(expected, signature):
        raise InvalidToken("the token signature is not valid")
    try:
        made = payload.get("cmade")
        if made is not None and not isinstance(made, str):
            raise TypeError("cmade")
        claims = Claims(
            user=str(payload["sub"]),
            client_id=str(payload["client_id"]),
            org=str(payload["org"]),
            issued_at=int(payload["iat"]),
            expires_at=int(payload["exp"]),
            client_made=made,
        )
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise InvalidToken("the token claims are not valid") from exc
    if claims.expires_at <= now:
        raise InvalidToken("the token has expired")
    return claims
