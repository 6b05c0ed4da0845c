"""Every case of ``tests/data/adobe/pql-cases.jsonl`` (and the project's own cases) as a test.

Cases we decide differently from the file are listed in ``DIFFERENT`` with the reason
(also in docs/pql.md, "Cases decided differently") and run as strict xfails.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from nextoffer import pql
from nextoffer.errors import PQLError
from support import ADOBE

HERE = Path(__file__).resolve().parent
SHARED = ADOBE / "pql-cases.jsonl"

DIFFERENT: dict[str, str] = {
    "dt-occurs-not-timestamp": (
        "schema-less checker: the type of person.name is unknown when the rule is compiled, "
        "and at run time a non-timestamp subject makes occurs false (null rules) instead of "
        "an error"
    ),
}


def load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_case(case: dict[str, Any]) -> Any:
    try:
        return pql.evaluate(
            case["expr"],
            profile=case["profile"],
            events=case.get("events"),
            now=case.get("now"),
            context=case.get("context"),
            variables=case.get("vars"),
            format=case.get("format", "pql/text"),
        )
    except PQLError:
        return "error"


def assert_expected(case: dict[str, Any], got: Any) -> None:
    want = case["expect"]
    if isinstance(want, bool) or want == "error":
        assert got == want and type(got) is type(want), f"{case['id']}: got {got!r}"
    else:
        assert isinstance(got, int | float) and not isinstance(got, bool), case["id"]
        assert math.isclose(got, want, rel_tol=0, abs_tol=1e-9), f"{case['id']}: got {got!r}"


def shared_params() -> list[Any]:
    return [
        pytest.param(
            c,
            id=c["id"],
            marks=[pytest.mark.xfail(strict=True, reason=DIFFERENT[c["id"]])]
            if c["id"] in DIFFERENT
            else [],
        )
        for c in load(SHARED)
    ]


@pytest.mark.parametrize("case", shared_params())
def test_shared_case(case: dict[str, Any]) -> None:
    assert_expected(case, run_case(case))


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c["id"]) for c in load(HERE / "pql_project_cases.jsonl")]
)
def test_project_case(case: dict[str, Any]) -> None:
    assert_expected(case, run_case(case))


def test_at_least_98_percent_of_shared_cases_pass() -> None:
    cases = load(SHARED)
    assert len(cases) >= 280
    assert set(DIFFERENT) <= {c["id"] for c in cases}
    assert len(DIFFERENT) <= len(cases) * 0.02
