"""A visitor's counter scope (``service/profiles.profile_key``): one per profile, or per
identity for a visitor without one, and never the same for two visitors."""

from __future__ import annotations

from nextoffer.service.profiles import MAX_SCOPE_TEXT, profile_key


def test_a_profile_counts_under_its_id_and_a_visitor_under_its_first_identity() -> None:
    assert profile_key("p-1", [("Email", "a@x")]) == "p-1"
    assert profile_key(None, [("Email", "a@x"), ("ECID", "1")]) == "identity:Email:a@x"
    assert profile_key(None, []) == "anonymous"


def test_two_visitors_whose_identities_read_alike_count_apart() -> None:
    # helper-64: namespace "a:b" with id "c" and namespace "a" with id "b:c" both read
    # "identity:a:b:c" in the text form: one shared the other's caps and events.
    first = profile_key(None, [("a:b", "c")])
    second = profile_key(None, [("a", "b:c")])
    assert first != second
    assert second == "identity:a:b:c"
    assert first.startswith("identity#")


def test_a_scope_past_its_bound_is_named_by_a_digest() -> None:
    long = profile_key(None, [("Email", "x" * MAX_SCOPE_TEXT)])
    assert long.startswith("identity#") and len(long) == len("identity#") + 64
    assert long != profile_key(None, [("Email", "x" * (MAX_SCOPE_TEXT + 1))])
