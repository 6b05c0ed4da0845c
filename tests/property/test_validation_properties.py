"""The fast validity check (``jsonschema-rs``) never accepts a body ``jsonschema`` rejects.

``repository/validation.py`` accepts a body when the fast validator finds it valid, and
asks ``jsonschema`` for the violations otherwise; so the fast one must not be laxer. The
bodies: the demo library's (every type it has, valid) and Adobe's documented xcore
instance bodies, each randomly broken — a value replaced, a key dropped, a key added.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextoffer.cli.demo import DEMO_ORG, DEMO_SANDBOX, seed_library
from nextoffer.errors import Unprocessable
from nextoffer.repository import validation
from nextoffer.repository.objects import OBJECT_TYPES, ObjectType
from nextoffer.root import NextOffer
from nextoffer.settings import Settings
from support import EXAMPLES, example

DATES = ["2026-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01", "not a date"]
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200_000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(DATES),
    st.sampled_from(["xcore:offer-placement:1234abcd", "xcore:tag:1", "approved", "live"]),
)
value = st.recursive(
    scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@cache
def bodies() -> list[tuple[ObjectType, dict[str, Any]]]:
    found: list[tuple[ObjectType, dict[str, Any]]] = []
    with (
        TemporaryDirectory() as folder,
        NextOffer.open(Settings(db_url=f"sqlite:///{Path(folder) / 'v.db'}")) as no,
    ):
        creds = no.bootstrap(org=DEMO_ORG, sandbox=DEMO_SANDBOX)
        seed_library(no.repository, creds.principal, creds.container_id)
        with no.store.session() as session:
            records = session.all_instances(creds.container_id)
    for record in records:
        body = {k: v for k, v in record.body.items() if k != "@id"}
        found.append((OBJECT_TYPES[record.schema_id], body))
    for path in sorted(EXAMPLES.glob("xcore-*.instance.json")):
        body = example(path.name)
        for object_type in OBJECT_TYPES.values():
            if object_type.name in path.name:
                found.append((object_type, body))
    return found


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, item in node.items():
            out += paths(item, (*prefix, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            out += paths(item, (*prefix, index))
    return out


def broken(body: dict[str, Any], draw: Any) -> dict[str, Any]:
    import copy

    body = copy.deepcopy(body)
    for _ in range(draw(st.integers(1, 3))):
        where = paths(body)
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent: Any = body
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(value)
        elif action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(value)
    return body


def test_the_corpus_holds_valid_bodies_of_several_types() -> None:
    valid = {t for t, b in bodies() if not list(validation.validator(t).iter_errors(b))}
    assert len(valid) >= 5


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_check_is_never_laxer_than_jsonschema(data: st.DataObject) -> None:
    object_type, body = data.draw(st.sampled_from(bodies()))
    candidate = broken(body, data.draw)
    if validation.fast_validator(object_type).is_valid(candidate):
        errors = list(validation.validator(object_type).iter_errors(candidate))
        assert not errors, (object_type.name, candidate, [e.message for e in errors])


def test_a_body_both_reject_gets_jsonschema_s_messages() -> None:
    object_type, body = next(
        (t, b) for t, b in bodies() if not list(validation.validator(t).iter_errors(b))
    )
    bad = dict(body, **{"xdm:name": 5})
    assert not validation.fast_validator(object_type).is_valid(bad)
    with pytest.raises(Unprocessable) as raised:
        validation.validate(object_type, bad)
    assert raised.value.pointer == "/xdm:name"
    assert "is not of type 'string'" in raised.value.detail
