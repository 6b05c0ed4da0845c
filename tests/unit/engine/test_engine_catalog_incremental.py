"""build_catalog(previous=…): a catalog built from the previous one equals one built anew.

Random edits (seeded) of a library with real PQL rules — priorities, tags, statuses, rule
texts (some invalid, some reading ``offer``), deleted and new offers and rules, collection
changes — and after each, the incremental build and a build from scratch are compared on
everything decisions and diagnostics read: candidates, pools and their shared rule parts,
offers, errors with their dependents, capped offers.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from nextoffer import pql
from nextoffer.engine import Catalog, CatalogInstance, build_catalog, sorted_chunks
from nextoffer.engine import catalog as schemas
from unit.engine.engine_library import (
    collection,
    criterion,
    decision,
    fallback,
    instance,
    offer,
    placement,
    rule,
)

_COMPILED: dict[tuple[Any, str, str], Any] = {}


def compile_rule(source: Any, *, format: str = "pql/text", kind: str = "rule") -> Any:
    """``pql.compile`` with a memory, as the service's compiled-rule cache shares results."""
    key = (source, format, kind)
    if key not in _COMPILED:
        try:
            _COMPILED[key] = pql.compile(source, format=format, kind=kind)
        except pql.PQLError as error:
            _COMPILED[key] = error
    found = _COMPILED[key]
    if isinstance(found, Exception):
        raise found
    return found


RULE_TEXTS = [
    'age >= 18 and country = "US"',
    'age >= 21 and country = "US"',
    'age >= 18 and country = "US" and tier = "gold"',
    'country = "US" and offer.rank.priority > 3',
    "age >",  # invalid
    "true",
]


def describe(catalog: Catalog) -> dict[str, Any]:
    offers = {
        at_id: (
            o.etag,
            o.priority,
            o.status,
            sorted(o.tags),
            o.rule.at_id if o.rule else None,
            o.rule.source if o.rule else None,
            o.rule.compiled is not None if o.rule else None,
            o.problem,
            sorted(o.representations),
        )
        for at_id, o in catalog.offers.items()
    }
    decisions = {}
    for at_id, d in catalog.decisions.items():
        decisions[at_id] = [
            (
                c.index,
                sorted(c.placements),
                [o.at_id for o in c.pool.members],
                {p: [o.at_id for o in listed] for p, listed in sorted(c.pool.by_placement.items())},
                {p: [r.source for r in req] for p, req in sorted(c.pool.required.items())},
            )
            for c in d.criteria
        ]
    candidates = {
        (d, p): [o.at_id for o in catalog.candidates(d, p)]
        for d in catalog.decisions
        for p in ("P1", "P2")
    }
    errors = sorted(
        (e.kind.value, e.at_id, e.message, e.dependents, e.activities) for e in catalog.errors
    )
    capped = sorted(catalog.capped_offer_ids(catalog.decisions))
    return {
        "offers": offers,
        "decisions": decisions,
        "candidates": candidates,
        "errors": errors,
        "capped": capped,
    }


class Library:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.items: dict[str, CatalogInstance] = {}
        self.serial = 0
        for item in (placement("P1"), placement("P2"), fallback("F1", ("P1", "P2"))):
            self.put(item)
        for n in range(4):
            self.put(rule(f"R{n}", RULE_TEXTS[n % 4]))
        for n in range(30):
            self.put(self.new_offer(f"O{n}"))
        self.put(collection("C1", ["T1"], "anyTags"))
        self.put(collection("C2", [f"O{n}" for n in range(0, 30, 3)]))
        self.put(collection("C3", ["T1", "T2"], "allTags"))
        self.put(
            decision(
                "D1",
                [criterion("C1", placements=["P1"]), criterion("C2", placements=["P1", "P2"])],
            )
        )
        self.put(decision("D2", [criterion("C3")]))

    def put(self, item: CatalogInstance) -> None:
        self.items[item.at_id] = item

    def new_offer(self, at_id: str) -> CatalogInstance:
        rng = self.rng
        made = offer(
            at_id,
            priority=rng.randrange(10),
            placements=rng.choice([("P1",), ("P2",), ("P1", "P2")]),
            status=rng.choice(["approved", "approved", "draft"]),
            rule=rng.choice([None, "R0", "R1", "R2", "R3"]),
            tags=rng.sample(["T1", "T2", "T3"], rng.randrange(3)),
            global_cap=rng.choice([None, 5]),
        )
        return made

    def bump(self, item: CatalogInstance, body: dict[str, Any]) -> CatalogInstance:
        return CatalogInstance(item.schema, item.at_id, item.instance_id, item.etag + 1, body)

    def edit(self) -> None:
        rng = self.rng
        offers = [i for i in self.items.values() if i.schema == schemas.PERSONALIZED_OFFER]
        rules = [i for i in self.items.values() if i.schema == schemas.ELIGIBILITY_RULE]
        choice = rng.randrange(8)
        if choice == 0 and offers:  # a priority
            item = rng.choice(offers)
            body = dict(item.body, **{"xdm:rank": {"xdm:priority": rng.randrange(10)}})
            self.put(self.bump(item, body))
        elif choice == 1 and offers:  # tags
            item = rng.choice(offers)
            body = dict(item.body, **{"xdm:tags": rng.sample(["T1", "T2", "T3"], 2)})
            self.put(self.bump(item, body))
        elif choice == 2 and offers:  # status
            item = rng.choice(offers)
            status = "draft" if item.body["xdm:status"] == "approved" else "approved"
            self.put(self.bump(item, dict(item.body, **{"xdm:status": status})))
        elif choice == 3 and rules:  # a rule's text
            item = rng.choice(rules)
            source = rng.choice(RULE_TEXTS)
            condition = {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": source}
            self.put(self.bump(item, dict(item.body, **{"xdm:condition": condition})))
        elif choice == 4 and offers:  # an offer deleted
            del self.items[rng.choice(offers).at_id]
        elif choice == 5:  # an offer added
            self.serial += 1
            self.put(self.new_offer(f"N{self.serial}"))
        elif choice == 6:  # a rule deleted or added back
            if rules and rng.random() < 0.5:
                del self.items[rng.choice(rules).at_id]
            else:  # a new instance (a new instance id), perhaps with an @id used before
                self.serial += 1
                made = rule(f"R{rng.randrange(4)}", rng.choice(RULE_TEXTS))
                self.put(
                    CatalogInstance(made.schema, made.at_id, f"new-{self.serial}", 1, made.body)
                )
        else:  # the offers collection's list
            ids = [o.at_id for o in offers]
            chosen = rng.sample(ids, min(len(ids), 8))
            self.put(self.bump(self.items["C2"], collection("C2", chosen).body))


@pytest.mark.parametrize("chunk", [128, 2])
@pytest.mark.parametrize("seed", range(12))
def test_an_incremental_build_equals_a_build_from_scratch(
    seed: int, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of 2 (split at 4): the pools' members and the tag index span many chunks,
    # which a patch splits, empties and drops.
    monkeypatch.setattr(sorted_chunks, "CHUNK", chunk)
    library = Library(random.Random(seed))
    previous = build_catalog(library.items.values(), compile_rule=compile_rule)
    patched = told = previous
    for _ in range(25):
        before = {at_id: (i.instance_id, i.etag) for at_id, i in library.items.items()}
        for _ in range(library.rng.randrange(1, 4)):
            library.edit()
        changed = [
            at_id
            for at_id, i in library.items.items()
            if before.get(at_id) != (i.instance_id, i.etag)
        ]
        fresh = build_catalog(library.items.values(), compile_rule=compile_rule)
        incremental = build_catalog(
            library.items.values(), compile_rule=compile_rule, previous=previous
        )
        assert describe(incremental) == describe(fresh)
        patched = build_catalog(
            dict(library.items), compile_rule=compile_rule, previous=patched, changed=changed
        )
        assert describe(patched) == describe(fresh)
        # The caller names the removed @ids too (as a refresh does): nothing is compared.
        removed = [at_id for at_id in before if at_id not in library.items]
        told = build_catalog(
            dict(library.items),
            compile_rule=compile_rule,
            previous=told,
            changed=changed,
            removed=removed,
        )
        assert describe(told) == describe(fresh)
        previous = incremental


def test_an_unchanged_library_reuses_every_offer_and_pool() -> None:
    library = Library(random.Random(99))
    first = build_catalog(library.items.values(), compile_rule=compile_rule)
    second = build_catalog(library.items.values(), compile_rule=compile_rule, previous=first)
    assert all(second.offers[k] is first.offers[k] for k in first.offers)
    pools = [c.pool for d in first.decisions.values() for c in d.criteria]
    again = [c.pool for d in second.decisions.values() for c in d.criteria]
    assert len(pools) == len(again) == 3
    assert all(a is b for a, b in zip(pools, again, strict=True))


def test_a_changed_rule_rebuilds_the_offers_that_use_it_and_only_them() -> None:
    items = {
        i.at_id: i
        for i in (
            placement("P1"),
            fallback("F1"),
            rule("R1", 'age >= 18 and country = "US"'),
            rule("R2", "age >= 30"),
            offer("A", rule="R1"),
            offer("B", rule="R2"),
            collection("C1", ["A", "B"]),
            decision("D1", [criterion("C1")]),
        )
    }
    first = build_catalog(items.values(), compile_rule=compile_rule)
    changed = instance(
        schemas.ELIGIBILITY_RULE,
        "R1",
        {
            "xdm:name": "R1",
            "xdm:condition": {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": "age > 1"},
        },
        etag=2,
    )
    items["R1"] = changed
    second = build_catalog(items.values(), compile_rule=compile_rule, previous=first)
    assert second.offers["B"] is first.offers["B"]
    assert second.offers["A"] is not first.offers["A"]
    assert second.offers["A"].rule is not None and second.offers["A"].rule.source == "age > 1"


@pytest.mark.parametrize("seed", range(4))
def test_a_build_with_pauses_calls_them_between_its_steps_and_equals_one_without(
    seed: int,
) -> None:
    library = Library(random.Random(seed))
    pauses: list[str] = []
    first = build_catalog(
        library.items.values(), compile_rule=compile_rule, pause=lambda: pauses.append("full")
    )
    # At least one pause per instance built (the full build's loop over them).
    assert len(pauses) >= len(library.items)
    assert describe(first) == describe(
        build_catalog(library.items.values(), compile_rule=compile_rule)
    )
    patched = plain = first
    for _ in range(10):
        before = {at_id: (i.instance_id, i.etag) for at_id, i in library.items.items()}
        library.edit()
        changed = [
            at_id
            for at_id, i in library.items.items()
            if before.get(at_id) != (i.instance_id, i.etag)
        ]
        pauses.clear()
        patched = build_catalog(
            dict(library.items),
            compile_rule=compile_rule,
            previous=patched,
            changed=changed,
            pause=lambda: pauses.append("patch"),
        )
        plain = build_catalog(
            dict(library.items), compile_rule=compile_rule, previous=plain, changed=changed
        )
        # A patch pauses between its phases (indexes, rules, offers, users, what follows).
        assert len(pauses) >= 6
        fresh = build_catalog(library.items.values(), compile_rule=compile_rule)
        assert describe(patched) == describe(plain) == describe(fresh)
