"""Every rule and ranking formula printed in ranking-and-rules-examples.md compiles.

The payloads are copied into ``pql_documented_examples.json`` (with their section); a
test checks that each copy still appears in the document
(``tests/data/adobe/ranking-and-rules-examples.md``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nextoffer import pql
from nextoffer.pql.parser import parse
from nextoffer.pql.printer import to_text
from support import ADOBE

HERE = Path(__file__).resolve().parent
DOC = ADOBE / "ranking-and-rules-examples.md"
EXAMPLES: list[dict[str, Any]] = json.loads(
    (HERE / "pql_documented_examples.json").read_text(encoding="utf-8")
)["examples"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["section"] for e in EXAMPLES])
def test_documented_example_compiles(example: dict[str, Any]) -> None:
    rule = pql.compile(example["pql"], kind=example["kind"])
    assert rule.kind == example["kind"]
    assert parse(to_text(rule.tree)) == rule.tree


def test_copies_match_the_document() -> None:
    text = DOC.read_text(encoding="utf-8")
    for example in EXAMPLES:
        if example.get("verbatim") is False:  # described in prose, not printed
            continue
        original = (
            example["pql"].replace("_acme", "<OrgID>")
            if "Edge API" in example["section"]
            else example["pql"]
        )
        flat = original.replace('"', '\\"')
        assert original in text or flat in text, example["section"]


def test_rule_reads_are_reported() -> None:
    rule = pql.compile(EXAMPLES[5]["pql"])
    assert rule.profile_paths == ("segmentMembership", "billingAddress.city")
    weather = pql.compile(EXAMPLES[23]["pql"], kind="formula")
    assert weather.context_paths == ("_xdm.context.additionalParameters;version=1.weather",)
    assert weather.profile_paths == ()
