"""Strings longer than an index entry holds are stored, found and compared whole.

PostgreSQL's b-tree entry holds at most 2,704 bytes; its search index keeps a string's
first characters and the comparison tests the rest on the row (migration
``0018_search_text_prefix``). SQLite indexes the whole string. The strings here do not
compress (an index entry is compressed first), and two of them share their first 300
characters, past the indexed prefix, so only the whole string tells them apart.
"""

from __future__ import annotations

import random
import string
from urllib.parse import urlencode

import pytest

from support import schema

BASE = "/data/core/xcore"
PLACEMENT = schema("offer-placement")


def noise(seed: int, length: int) -> str:
    """Letters and CJK characters (3 bytes each in UTF-8) in no order that compresses."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + "".join(chr(0x4E00 + n) for n in range(2000))
    return "".join(rng.choice(alphabet) for _ in range(length))


SHARED = noise(1, 300)
# Under the 2,048 characters a filter's value may have, and over 2,704 bytes.
LOW = SHARED + "a" + noise(2, 1700)  # sorts below HIGH: they differ at character 301
HIGH = SHARED + "b" + noise(3, 1700)
#: 1,024 characters of 4 bytes each in UTF-8 (the longest name the schema allows).
WIDE = "".join(chr(0x1F600 + n % 80) for n in range(1024))


@pytest.fixture
def long_placements(tenant) -> dict[str, str]:
    """short name → instanceId."""
    made = {}
    for name, title, description in [
        ("low", "Low " + SHARED, LOW),
        ("high", "High " + SHARED, HIGH),
        ("wide", WIDE, "!" + noise(4, 99_999)),  # "!" sorts first
    ]:
        receipt = tenant.create(
            "offer-placement",
            {
                "xdm:name": title,
                "xdm:channel": "web",
                "xdm:componentType": "html",
                "xdm:description": description,
            },
        )
        made[name] = receipt["instanceId"]
    return made


def found(tenant, **params: str) -> set[str]:
    query = urlencode({"schema": PLACEMENT, "limit": "50", **params})
    response = tenant.client.get(
        f"{BASE}/{tenant.container}/instances?{query}", headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return {item["instanceId"] for item in response.json()["_embedded"]["results"]}


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("==", LOW, {"low"}),
        ("==", HIGH, {"high"}),
        ("==", SHARED, set()),
        ("<", HIGH, {"low", "wide"}),
        ("<=", LOW, {"low", "wide"}),
        (">", LOW, {"high"}),
        (">=", HIGH, {"high"}),
        (">=", SHARED, {"low", "high"}),
        ("<", SHARED, {"wide"}),
        # A literal shorter than the indexed prefix, against the long strings.
        ("==", SHARED[:50], set()),
        (">=", SHARED[:50], {"low", "high"}),
        ("<", SHARED[:50], {"wide"}),
        (">", "!", {"low", "high", "wide"}),
    ],
)
def test_long_strings_compare_whole(tenant, long_placements, op, value, expected):
    got = found(tenant, property=f"_instance.xdm:description{op}{value}")
    assert got == {long_placements[name] for name in expected}


def test_long_names_are_found_whole_and_by_a_long_literal_start(tenant, long_placements):
    assert found(tenant, name="Low " + SHARED) == {long_placements["low"]}
    assert found(tenant, name=WIDE) == {long_placements["wide"]}
    assert found(tenant, name="High " + SHARED[:250] + "*") == {long_placements["high"]}
    assert found(tenant, name=WIDE[:300] + "*") == {long_placements["wide"]}
    assert found(tenant, name="*" + SHARED[-20:]) == {
        long_placements["low"],
        long_placements["high"],
    }


def test_a_long_string_is_read_back_whole_and_deleted(tenant, long_placements):
    instance_id = long_placements["low"]
    url = f"{BASE}/{tenant.container}/instances/{instance_id}"
    current = tenant.client.get(url, headers=tenant.headers)
    assert current.status_code == 200
    assert current.json()["_instance"]["xdm:description"] == LOW
    deleted = tenant.client.delete(url, headers=tenant.headers)
    assert deleted.status_code == 202, deleted.text
    assert found(tenant, property=f"_instance.xdm:description=={LOW}") == set()


def test_a_name_of_1024_characters_outside_latin_1_is_stored_and_listed(tenant):
    # Random CJK characters, 3 bytes each: 3 KB that do not compress.
    rng = random.Random(6)
    name = "".join(chr(0x4E00 + rng.randrange(20000)) for _ in range(1024))
    created = tenant.create(
        "offer-placement", {"xdm:name": name, "xdm:channel": "web", "xdm:componentType": "html"}
    )
    assert found(tenant, name=name) == {created["instanceId"]}
    page = tenant.client.get(
        f"{BASE}/{tenant.container}/instances?"
        + urlencode({"schema": PLACEMENT, "orderby": "_instance.xdm:name"}),
        headers=tenant.headers,
    )
    assert page.status_code == 200
    assert page.json()["_embedded"]["results"][0]["_instance"]["xdm:name"] == name
