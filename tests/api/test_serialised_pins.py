"""The serialised-options cache counts what its entries keep alive, not only the JSON it
returns: an entry holds its option, and so the offer's whole body, which a replaced
snapshot no longer holds (found by ``scripts/soak``: the server grew while an offer was
edited over and over)."""

from __future__ import annotations

from nextoffer.api import decision_response
from nextoffer.api.decision_request import ResponseFormat
from nextoffer.engine import Option

IDS_ONLY = ResponseFormat()


def edited(version: int, content: str, *, offer: int = 1) -> Option:
    """The option of one offer after its ``version``-th edit: a new object each time, as a
    rebuilt snapshot makes, with its large content in the body it pins."""
    representation = {"xdm:components": [{"xdm:content": content}]}
    body = {"xdm:name": "Gold", "xdm:representations": [representation]}
    return Option(f"xcore:personalized-offer:{offer}", version, body, representation, 50)


def test_kept_options_are_bounded_by_the_bytes_they_pin():
    kept = decision_response._Serialised(max_entries=100, max_bytes=20_000)
    names = frozenset({"name"})
    alive = []  # the options stay alive here, as a snapshot's do while it serves
    for n in range(20):
        option = edited(1, "x" * 5_000, offer=n)  # twenty offers: none replaces another
        alive.append(option)
        # Without content the JSON is a few dozen bytes; the body it keeps is 5 KB.
        kept.option(option, IDS_ONLY, names)
    assert len(kept) <= 2, f"{len(kept)} entries keep about {len(kept) * 5} KB alive"


def test_a_kept_option_is_still_served_from_the_cache():
    kept = decision_response._Serialised(max_entries=100, max_bytes=20_000)
    names = frozenset({"name"})
    option = edited(1, "x" * 5_000)
    first = kept.option(option, IDS_ONLY, names)
    assert (id(option), names, False) in kept
    assert kept.option(option, IDS_ONLY, names) is first


def test_an_offers_next_option_replaces_the_entry_of_the_one_before():
    kept = decision_response._Serialised(max_entries=100, max_bytes=10_000_000)
    names = frozenset({"name"})
    alive = []
    for version in range(20):
        option = edited(version, "small")
        alive.append(option)
        kept.option(option, IDS_ONLY, names)
    # Only the latest snapshot's option is asked for again; the others only pin bodies.
    assert len(kept) == 1 and (id(alive[-1]), names, False) in kept
