"""The response body of a decision: options serialised once per snapshot, never stale."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from nextoffer.api import decision_response
from nextoffer.api.decision_request import ResponseFormat
from nextoffer.engine import FallbackOption, ObjectRef, Option, Proposition
from nextoffer.engine.result import DecisionResult
from nextoffer.service.attempt import DecisionOutcome

PLACEMENT = ObjectRef("xcore:offer-placement:1", 1, {"xdm:name": "Banner"})
ACTIVITY = ObjectRef("xcore:offer-activity:1", 1, {"xdm:name": "Spring"})
WITH_CONTENT = ResponseFormat(
    include_content=True, metadata={"xdm:option": frozenset({"name", "priority"})}
)
IDS_ONLY = ResponseFormat()


def option(content: str, *, score: float | None = None) -> Option:
    body = {"xdm:name": "Gold", "xdm:characteristics": {"tier": "gold"}}
    representation = {
        "xdm:placement": PLACEMENT.at_id,
        "xdm:components": [{"xdm:content": content, "dc:language": ["en"]}],
    }
    return Option("xcore:personalized-offer:1", 3, body, representation, 50, score)


def answered(*options: Option, fmt: ResponseFormat, fallback: FallbackOption | None = None):
    result = DecisionResult(
        propositions=(Proposition(ACTIVITY, PLACEMENT, options, fallback),), proposed=()
    )
    created = datetime(2026, 12, 6, tzinfo=UTC)
    outcome = DecisionOutcome("p-1", created, result, int(created.timestamp() * 1_000_000))
    body = decision_response.response(outcome, fmt, decision_request_id=None)
    plain = decision_response.response(outcome, fmt, decision_request_id=None, compact=False)
    # Serialised once or built afresh, the bytes on the wire are the same JSON.
    assert orjson.loads(orjson.dumps(body)) == plain
    return plain["xdm:propositions"][0]


def test_each_format_gets_its_own_serialisation_of_one_option():
    gold = option("<p>gold</p>")
    full = answered(gold, fmt=WITH_CONTENT)["xdm:options"][0]
    bare = answered(gold, fmt=IDS_ONLY)["xdm:options"][0]
    again = answered(gold, fmt=WITH_CONTENT)["xdm:options"][0]
    assert (
        full
        == again
        == {
            "xdm:id": "xcore:personalized-offer:1",
            "repo:etag": 3,
            "xdm:name": "Gold",
            "xdm:priority": 50,
            "xdm:content": "<p>gold</p>",
            "dc:language": ["en"],
        }
    )
    assert bare == {"xdm:id": "xcore:personalized-offer:1", "repo:etag": 3}


def test_a_new_snapshots_option_is_serialised_anew_even_at_the_same_id_and_etag():
    old = option("<p>before</p>")
    assert answered(old, fmt=WITH_CONTENT)["xdm:options"][0]["xdm:content"] == "<p>before</p>"
    new = option("<p>after</p>")  # the same offer, id and etag, from another snapshot
    assert answered(new, fmt=WITH_CONTENT)["xdm:options"][0]["xdm:content"] == "<p>after</p>"


def test_a_serialised_option_is_held_so_its_address_is_never_another_options():
    gone = option("<p>gone</p>")
    answered(gone, fmt=WITH_CONTENT)
    address = id(gone)
    del gone
    # CPython gives a freed object's memory to the next one of its size: were the cache
    # keyed by an address it did not hold, a new option could take the old one's entry.
    made = [option("<p>here now</p>") for _ in range(1000)]
    assert address not in {id(candidate) for candidate in made}
    for candidate in made[:3]:
        served = answered(candidate, fmt=WITH_CONTENT)["xdm:options"][0]
        assert served["xdm:content"] == "<p>here now</p>"


def test_a_scored_option_is_serialised_with_its_own_score():
    first = answered(option("<p>x</p>", score=0.25), fmt=IDS_ONLY)["xdm:options"][0]
    second = answered(option("<p>x</p>", score=0.75), fmt=IDS_ONLY)["xdm:options"][0]
    assert (first["xdm:score"], second["xdm:score"]) == (0.25, 0.75)


def test_the_fallback_is_served_from_the_same_cache_as_options():
    fallback = FallbackOption(
        "xcore:fallback-offer:1",
        2,
        {"xdm:name": "Default"},
        {"xdm:components": [{"xdm:content": "<p>default</p>"}]},
    )
    first = answered(fmt=WITH_CONTENT, fallback=fallback)["xdm:fallback"]
    assert first == answered(fmt=WITH_CONTENT, fallback=fallback)["xdm:fallback"]
    assert first == {
        "xdm:id": "xcore:fallback-offer:1",
        "repo:etag": 2,
        "xdm:name": "Default",
        "xdm:content": "<p>default</p>",
    }


def test_the_kept_json_is_bounded_in_bytes_and_entries():
    # Bytes kept: the JSON and the option it pins; each a different offer, since an offer's
    # next option replaces its entry (tests/api/test_serialised_pins.py).
    serial = iter(range(100))

    def distinct(content: str) -> Option:
        return option(content)._replace(offer_id=f"xcore:personalized-offer:{next(serial)}")

    kept = decision_response._Serialised(max_entries=3, max_bytes=2500)
    names = frozenset({"name"})
    small = [distinct(f"<p>{n}</p>") for n in range(3)]
    for each in small:
        kept.option(each, WITH_CONTENT, names)
    assert len(kept) == 3
    # A fourth entry passes the count: the three go, the fourth stays.
    fourth = distinct("<p>3</p>")
    kept.option(fourth, WITH_CONTENT, names)
    assert len(kept) == 1 and (id(fourth), names, True) in kept
    # Larger than the whole bound: served, never kept.
    large = distinct("x" * 2600)
    served = orjson.loads(orjson.dumps(kept.option(large, WITH_CONTENT, names)))
    assert served["xdm:content"] == "x" * 2600
    assert (id(large), names, True) not in kept and len(kept) == 1
    # Within the bound alone, past it with what is kept: the kept ones go.
    medium = distinct("y" * 600)
    kept.option(medium, WITH_CONTENT, names)
    assert len(kept) == 2
    other = distinct("z" * 600)
    kept.option(other, WITH_CONTENT, names)
    assert len(kept) == 1 and (id(other), names, True) in kept
