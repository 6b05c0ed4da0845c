"""pql.stored: a compiled rule as bytes and back evaluates exactly like the original."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from nextoffer import pql
from nextoffer.pql import stored

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)
PROFILE = {"age": 30, "country": "US", "tier": "gold", "root": 3, "tags": ["a", "b"]}
EVENTS = [{"eventType": "click", "timestamp": "2026-12-04T10:00:00Z"}]

CASES: list[tuple[str, str]] = [
    ('age >= 18 and country in ["US", "CA"] and tier = "gold"', "rule"),
    ('xEvent[eventType = "click"].count() > 0', "rule"),
    ("xEvent.timestamp occurs <= 3 days before now", "rule"),
    ("root > 2", "rule"),  # a root name: the ``variables`` variant is generated lazily
    ("offer.rank.priority * 2 + age", "formula"),
    ('country like "U%"', "rule"),
]


def run(rule: Any, **variables: Any) -> Any:
    try:
        return rule.evaluate(profile=PROFILE, events=EVENTS, now=NOW, variables=variables or None)
    except pql.PQLError as error:
        return ("error", error.message)


@pytest.mark.parametrize(("source", "kind"), CASES)
def test_a_loaded_rule_evaluates_like_the_compiled_one(source: str, kind: str) -> None:
    original = pql.compile(source, kind=kind)
    loaded = stored.load(stored.dump(original))
    assert run(loaded) == run(original)
    given = {"root": 1, "offer": {"rank": {"priority": 4}}}
    assert run(loaded, **given) == run(original, **given)
    assert loaded.conjuncts == original.conjuncts
    assert (loaded.source, loaded.kind, loaded.format) == (source, kind, "pql/text")
    assert loaded.profile_paths == original.profile_paths


def test_bytes_of_another_format_are_refused() -> None:
    data = bytearray(stored.dump(pql.compile("age > 1")))
    with pytest.raises(ValueError, match="format"):
        stored.load(b"\x80\x05K\x00.")  # a pickled 0, not a stored rule
    assert stored.load(bytes(data)).evaluate(profile={"age": 2}) is True


def test_loaded_rules_of_one_shape_share_code_and_keep_their_own_values() -> None:
    first = stored.load(stored.dump(pql.compile('age >= 18 and tier = "gold"')))
    second = stored.load(stored.dump(pql.compile('age >= 40 and tier = "silver"')))
    assert first.evaluate.__code__ is second.evaluate.__code__
    assert run(first) is True
    assert run(second) is False
    assert second.evaluate(profile={"age": 41, "tier": "silver"}) is True
