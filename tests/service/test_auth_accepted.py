"""Accepted callers are remembered by their headers (``Authenticator._accepted``), and a
remembered one is answered exactly as the full check would answer from its caches: an
expired token is refused, a client's grants are read again after ``CLIENT_CACHE_SECONDS``
and a fresher read of them is followed at once. On a real SQLite database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nextoffer import NextOffer, Settings
from nextoffer.errors import AuthError
from nextoffer.service import tokens
from nextoffer.service.auth import CLIENT_CACHE_SECONDS, Authenticator
from nextoffer.service.tenants import bootstrap

ORG = "AUTH@AdobeOrg"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def no(tmp_path: Path) -> Iterator[NextOffer]:
    with NextOffer.open(Settings(db_url=f"sqlite:///{tmp_path / 'auth.db'}")) as opened:
        yield opened


def headers(token: str, api_key: str, sandbox: str | None = "prod") -> dict[str, str]:
    found = {"authorization": f"Bearer {token}", "x-api-key": api_key, "x-gw-ims-org-id": ORG}
    if sandbox is not None:
        found["x-sandbox-name"] = sandbox
    return found


def revoke(no: NextOffer, client_id: str, sandbox: str) -> None:
    no.revoke(client_id, sandbox=sandbox)


def token_until(no: NextOffer, client_id: str, issued_at: int, expires_at: int) -> str:
    with no.store.session() as session:
        kid, secret = next(iter(session.signing_keys().items()))
    claims = tokens.Claims("u", client_id, ORG, issued_at, expires_at)
    return tokens.mint(claims, kid=kid, secret=secret)


def test_a_remembered_caller_is_the_same_caller(no: NextOffer) -> None:
    creds = no.bootstrap(org=ORG, sandbox="prod")
    auth = Authenticator(no.store, clock=Clock(1_000.0))
    first = auth.authenticate(headers(creds.access_token, creds.api_key))
    again = auth.authenticate(headers(creds.access_token, creds.api_key))
    assert again is first
    assert (first.org, first.sandbox, first.client_id) == (ORG, "prod", creds.api_key)
    # Without x-sandbox-name: its own entry, the default sandbox.
    assert auth.authenticate(headers(creds.access_token, creds.api_key, None)).sandbox == "prod"


def test_a_remembered_token_is_refused_once_it_expires(no: NextOffer) -> None:
    creds = no.bootstrap(org=ORG, sandbox="prod")
    now = int(time.time())  # a token is minted after its client was made
    clock = Clock(now)
    auth = Authenticator(no.store, clock=clock)
    token = token_until(no, creds.api_key, now, now + 2)
    auth.authenticate(headers(token, creds.api_key))
    clock.now = now + 1.9
    auth.authenticate(headers(token, creds.api_key))
    clock.now = now + 2.0
    with pytest.raises(AuthError) as refused:
        auth.authenticate(headers(token, creds.api_key))
    assert refused.value.error_code == "401013"


def test_a_revoked_grant_is_refused_once_the_client_read_is_stale(no: NextOffer) -> None:
    creds = no.bootstrap(org=ORG, sandbox="prod")
    clock = Clock(1_000.0)
    auth = Authenticator(no.store, clock=clock)
    auth.authenticate(headers(creds.access_token, creds.api_key))
    revoke(no, creds.api_key, "prod")
    # Within the bound the client's grants are not read again (as without the memory).
    clock.now = 1_000.0 + CLIENT_CACHE_SECONDS - 0.1
    auth.authenticate(headers(creds.access_token, creds.api_key))
    clock.now = 1_000.0 + CLIENT_CACHE_SECONDS
    with pytest.raises(AuthError) as refused:
        auth.authenticate(headers(creds.access_token, creds.api_key))
    assert refused.value.error_code == "403025"


def test_a_fresher_read_of_the_client_is_followed_at_once(no: NextOffer) -> None:
    creds = no.bootstrap(org=ORG, sandbox="prod")
    with no.store.session() as session:
        session.grant_sandbox(creds.api_key, "dev")
    clock = Clock(1_000.0)
    auth = Authenticator(no.store, clock=clock)
    auth.authenticate(headers(creds.access_token, creds.api_key, "dev"))
    revoke(no, creds.api_key, "dev")
    # A sandbox the cached read lacks makes the full check read the client again ...
    with pytest.raises(AuthError):
        auth.authenticate(headers(creds.access_token, creds.api_key, "staging"))
    # ... and the remembered "dev" caller is judged by that fresher read, not its own.
    with pytest.raises(AuthError) as refused:
        auth.authenticate(headers(creds.access_token, creds.api_key, "dev"))
    assert refused.value.error_code == "403025"


def test_a_key_rotated_on_a_host_whose_clock_is_behind_is_still_the_newest(
    tmp_path: Path,
) -> None:
    # Keys are ordered by when they were added, by each host's clock: rotate-key on a
    # host an hour behind must still make the key new tokens use and drop-old-keys keeps.
    from datetime import timedelta

    from nextoffer.ids import utcnow
    from nextoffer.service.tenants import drop_old_signing_keys, rotate_signing_key

    with NextOffer.open(Settings(db_url=f"sqlite:///{tmp_path / 'k.db'}")) as no:
        first = no.bootstrap(org="ACME@AdobeOrg", sandbox="prod")
        kid = rotate_signing_key(no.store, now=utcnow() - timedelta(hours=1))
        again = no.bootstrap(org="ACME@AdobeOrg", sandbox="prod")
        assert tokens.kid_of(again.access_token) == kid != tokens.kid_of(first.access_token)
        assert drop_old_signing_keys(no.store) == 1
        with no.store.session() as session:
            assert list(session.signing_keys()) == [kid]


def test_a_client_made_again_within_the_second_refuses_the_tokens_of_the_one_before(
    no: NextOffer,
) -> None:
    made = datetime(2026, 12, 7, 21, 0, 0, 100_000, tzinfo=UTC)
    first = bootstrap(no.store, org=ORG, sandbox="prod", now=made, client_id="shop")
    no.revoke("shop")
    again = bootstrap(
        no.store, org=ORG, sandbox="prod", now=made + timedelta(milliseconds=300), client_id="shop"
    )
    auth = Authenticator(no.store, clock=Clock(made.timestamp() + 1))
    assert auth.authenticate(headers(again.access_token, "shop")).client_id == "shop"
    with pytest.raises(AuthError) as refused:
        auth.authenticate(headers(first.access_token, "shop"))
    assert refused.value.http_status == 401


def test_a_token_without_its_client_s_time_is_judged_by_the_second_it_was_issued(
    no: NextOffer,
) -> None:
    # Tokens minted before they named their client's time: issued before the client was
    # made, refused; in its second or after, accepted.
    made = datetime(2026, 12, 7, 21, 0, 0, 100_000, tzinfo=UTC)
    bootstrap(no.store, org=ORG, sandbox="prod", now=made, client_id="shop")
    second = int(made.timestamp())
    auth = Authenticator(no.store, clock=Clock(second + 1))
    before = token_until(no, "shop", second - 1, second + 60)
    within = token_until(no, "shop", second, second + 60)
    assert auth.authenticate(headers(within, "shop")).client_id == "shop"
    with pytest.raises(AuthError):
        auth.authenticate(headers(before, "shop"))


def test_a_client_made_again_is_accepted_at_once_by_a_node_caching_the_one_before(
    no: NextOffer,
) -> None:
    # helper-64: the cached client's time did not match the new token's, and nothing read
    # the client again until the cache expired: a fresh token refused for up to 5 s.
    made = datetime(2026, 12, 7, 21, 0, 0, 100_000, tzinfo=UTC)
    first = bootstrap(no.store, org=ORG, sandbox="prod", now=made, client_id="shop")
    auth = Authenticator(no.store, clock=Clock(made.timestamp() + 1))
    assert auth.authenticate(headers(first.access_token, "shop")).client_id == "shop"
    no.revoke("shop")
    again = bootstrap(
        no.store, org=ORG, sandbox="prod", now=made + timedelta(seconds=2), client_id="shop"
    )
    # Within the client cache's seconds of the first read.
    assert auth.authenticate(headers(again.access_token, "shop")).client_id == "shop"


def test_a_revoked_client_s_token_is_refused_without_reading_the_database_again(
    no: NextOffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = datetime(2026, 12, 7, 21, 0, 0, 100_000, tzinfo=UTC)
    first = bootstrap(no.store, org=ORG, sandbox="prod", now=made, client_id="shop")
    no.revoke("shop")
    auth = Authenticator(no.store, clock=Clock(made.timestamp() + 1))
    reads: list[str] = []
    real = Authenticator._client

    def counted(self: Authenticator, client_id: str, *, fresh: bool = False) -> object:
        reads.append(client_id)
        return real(self, client_id, fresh=fresh)

    monkeypatch.setattr(Authenticator, "_client", counted)
    for _ in range(3):
        with pytest.raises(AuthError) as refused:
            auth.authenticate(headers(first.access_token, "shop"))
        assert refused.value.error_code == "401013"
    assert len(reads) == 2  # the first refusal read the cache, then the database

    # The same id made again: its own tokens are accepted, the old one still refused.
    again = bootstrap(
        no.store, org=ORG, sandbox="prod", now=made + timedelta(seconds=2), client_id="shop"
    )
    assert auth.authenticate(headers(again.access_token, "shop")).client_id == "shop"
    with pytest.raises(AuthError):
        auth.authenticate(headers(first.access_token, "shop"))
