"""Who is calling, for which org and sandbox (spec offer-api-xcore §2).

Every API call carries ``Authorization: Bearer``, ``x-api-key``, ``x-gw-ims-org-id`` and
usually ``x-sandbox-name`` (without it, the organisation's default sandbox ``prod``, as on
Adobe's Platform). The api key must be the token's client, the org the token's org, and
the sandbox one the client may use. Failures are :class:`AuthError` with Adobe's gateway
codes; the API renders them as ``{"error_code", "message"}``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from threading import Lock

from nextoffer.errors import AuthError, Unavailable
from nextoffer.ids import parse_datetime
from nextoffer.service import tokens
from nextoffer.storage.session import ClientRecord
from nextoffer.storage.store import Store

#: How long a client's sandbox grants are trusted before they are read again.
CLIENT_CACHE_SECONDS = 5.0
#: How long the token signing keys are trusted before they are read again: a key dropped
#: (``nextoffer admin drop-old-keys``) is refused by every process within this.
KEY_CACHE_SECONDS = 5.0
#: Verified tokens kept in memory (a verified signature is the costly part).
TOKEN_CACHE_SIZE = 4096
#: The sandbox of a request without ``x-sandbox-name`` (Platform: "If the x-sandbox-name
#: header is not specified, requests are resolved under the prod sandbox").
DEFAULT_SANDBOX = "prod"


#: Not frozen: made once per request (``frozen=True`` costs a call per field at
#: construction, docs/benchmarks.md); nothing changes one once made.
@dataclass(slots=True)
class Principal:
    """An authenticated caller, scoped to one org and one sandbox."""

    org: str
    sandbox: str
    client_id: str
    user: str


def _missing_token() -> AuthError:
    return AuthError(403, "403010", "Oauth token is missing.")


def _invalid_token() -> AuthError:
    return AuthError(401, "401013", "Oauth token is not valid")


def _made_at(client: ClientRecord) -> int:
    """When the client was made, in epoch seconds (0 when unknown)."""
    try:
        return int(parse_datetime(client.created).timestamp())
    except ValueError:
        return 0


def _minted_for(claims: tokens.Claims, client: ClientRecord) -> bool:
    """Whether the token was minted for this very client, not one of the same id revoked
    before it was made: by the time the client was made, which the token names to the
    microsecond; a token minted without that claim (by an older nextoffer), by the whole
    second it was issued in."""
    if claims.client_made is not None:
        return claims.client_made == client.created
    return claims.issued_at >= _made_at(client)


class Authenticator:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        #: The signing keys as last read (when, kid -> secret, oldest first).
        self._keyring: tuple[float, dict[str, str]] | None = None
        self._clients: dict[str, tuple[float, ClientRecord | None]] = {}
        #: Verified tokens: their claims and the key that signed them.
        self._tokens: dict[str, tuple[tokens.Claims, str]] = {}
        #: Verified tokens refused for good: their client revoked, or made again since
        #: they were minted (a client made again has a new time, which no token minted
        #: before names). A revoked integration that keeps calling costs no database read.
        self._refused: set[str] = set()
        self._lock = Lock()
        self._fallback = secrets.token_hex(32)
        self._secrets: dict[str, bytes] = {}
        #: Callers accepted lately, by their four headers: the principal, its token's
        #: expiry, the client read (``_clients``' entry) and the keys read it was judged
        #: by. A hit stands only while the full path would answer the same from its
        #: caches: the token unexpired, those very reads still the cached ones, and fresh.
        self._accepted: dict[
            tuple[str | None, str | None, str | None, str | None],
            tuple[
                Principal,
                int,
                tuple[float, ClientRecord | None] | None,
                tuple[float, dict[str, str]] | None,
            ],
        ] = {}

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """Check the headers; raise :class:`AuthError` in the gateway's order."""
        key = (
            headers.get("authorization"),
            headers.get("x-api-key"),
            headers.get("x-gw-ims-org-id"),
            headers.get("x-sandbox-name"),
        )
        accepted = self._accepted.get(key)
        if accepted is not None:
            principal, expires_at, read, ring = accepted
            if (
                read is not None
                and self._clients.get(principal.client_id) is read
                and ring is not None
                and self._keyring is ring
            ):
                now = self._clock()
                if (
                    expires_at > int(now)
                    and now - read[0] < CLIENT_CACHE_SECONDS
                    and now - ring[0] < KEY_CACHE_SECONDS
                ):
                    return principal
        principal, expires_at = self._check(headers)
        with self._lock:
            if len(self._accepted) >= TOKEN_CACHE_SIZE:
                self._accepted.clear()
            self._accepted[key] = (
                principal,
                expires_at,
                self._clients.get(principal.client_id),
                self._keyring,
            )
        return principal

    def _check(self, headers: Mapping[str, str]) -> tuple[Principal, int]:
        """Every check, in the gateway's order: the principal and its token's expiry."""
        authorization = headers.get("authorization")
        if not authorization:
            raise _missing_token()
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _invalid_token()
        claims = self._claims(token)
        if token in self._refused:
            raise _invalid_token()
        api_key = headers.get("x-api-key")
        if not api_key:
            raise AuthError(403, "403000", "Api Key is required")
        if api_key != claims.client_id:
            raise AuthError(403, "403003", "Api Key is invalid")
        org = headers.get("x-gw-ims-org-id")
        if not org:
            raise AuthError(400, "400003", "Missing header: x-gw-ims-org-id")
        if org != claims.org:
            raise AuthError(403, "403025", "Profile is not valid")
        sandbox = headers.get("x-sandbox-name") or DEFAULT_SANDBOX
        client = self._client(claims.client_id)
        if client is None or sandbox not in client.sandboxes or not _minted_for(claims, client):
            # A refusal is never served from the cache: a grant made a moment ago counts,
            # and so does a client made again since (the token may be the new one's).
            client = self._client(claims.client_id, fresh=True)
        if client is None or client.org_id != org or not _minted_for(claims, client):
            # No such client (revoked), another org's, or a token minted before the client
            # was made again (``nextoffer admin revoke``, then ``bootstrap``): not its own,
            # and never will be.
            with self._lock:
                if len(self._refused) >= TOKEN_CACHE_SIZE:
                    self._refused.clear()
                self._refused.add(token)
            raise _invalid_token()
        if sandbox not in client.sandboxes:
            raise AuthError(403, "403025", "Profile is not valid for this sandbox")
        principal = Principal(
            org=org, sandbox=sandbox, client_id=claims.client_id, user=claims.user
        )
        return principal, claims.expires_at

    def expires_at(self, token: str) -> int:
        """When ``token`` (already accepted by :meth:`authenticate`) expires, epoch seconds:
        the console's session ends with it."""
        return self._claims(token).expires_at

    def session_secret(self, purpose: str) -> bytes:
        """A secret for signing what this server hands out (the console's session cookie
        and CSRF tokens), derived from the oldest token signing key in the database: the
        same on every worker and node, kept through a new key (``admin rotate-key``) and
        changed when the keys it came from are dropped."""
        keys = self._keys_now()
        cached = self._secrets.get(purpose)
        if cached is not None:
            return cached
        if not keys:  # nothing bootstrapped yet: no token can sign in anyway
            return hashlib.sha256(f"nextoffer/{purpose}/{self._fallback}".encode()).digest()
        kid, key = next(iter(keys.items()))
        secret = hashlib.sha256(f"nextoffer/{purpose}/{kid}:{key};".encode()).digest()
        with self._lock:
            self._secrets[purpose] = secret
        return secret

    def _claims(self, token: str) -> tokens.Claims:
        now = int(self._clock())
        cached = self._tokens.get(token)
        if cached is not None:
            claims, kid = cached
            if claims.expires_at > now and kid in self._keys_now():
                return claims
            self._tokens.pop(token, None)
            raise _invalid_token()
        try:
            kid = tokens.kid_of(token)
            secret = self._key(kid)
            if secret is None:
                raise _invalid_token()
            claims = tokens.verify(token, secret=secret, now=now)
        except tokens.InvalidToken as exc:
            raise _invalid_token() from exc
        with self._lock:
            if len(self._tokens) >= TOKEN_CACHE_SIZE:
                self._tokens.clear()
            self._tokens[token] = (claims, kid)
        return claims

    def _key(self, kid: str) -> str | None:
        """The secret of key ``kid``; a key this process has not seen is read again at
        once (one minted a moment ago, elsewhere)."""
        secret = self._keys_now().get(kid)
        if secret is None:
            secret = self._keys_now(fresh=True).get(kid)
        return secret

    def _keys_now(self, *, fresh: bool = False) -> dict[str, str]:
        """The signing keys, read again when the last read is :data:`KEY_CACHE_SECONDS`
        old (or ``fresh``); the last read stands while the database is away. The session
        secrets derived from them are made again when they change."""
        ring = self._keyring
        now = self._clock()
        if not fresh and ring is not None and now - ring[0] < KEY_CACHE_SECONDS:
            return ring[1]
        try:
            with self._store.session() as session:
                keys = session.signing_keys()
        except Unavailable:
            if ring is None:
                raise
            return ring[1]
        with self._lock:
            if ring is None or ring[1] != keys:
                self._secrets.clear()
            self._keyring = (now, keys)
        return keys

    def _client(self, client_id: str, *, fresh: bool = False) -> ClientRecord | None:
        now = self._clock()
        cached = self._clients.get(client_id)
        if not fresh and cached is not None and now - cached[0] < CLIENT_CACHE_SECONDS:
            return cached[1]
        try:
            with self._store.session() as session:
                client = session.get_client(client_id)
        except Unavailable:
            if cached is None:
                raise
            return cached[1]  # the database is gone for now: the last answer stands
        with self._lock:
            self._clients[client_id] = (now, client)
        return client
