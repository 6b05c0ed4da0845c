"""PQL fuzzing, a bounded slice (``scripts/fuzz-pql`` runs 100,000 inputs): any text, from
any of the generators in support/pqlfuzz.py, on any data, compiles and evaluates to
``PQLError`` or a value of the documented type, within 100 ms. Then the regressions it found."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings

from nextoffer import pql
from nextoffer.errors import PQLError
from nextoffer.pql import regex
from support import pqlfuzz

SLICE = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("generator", sorted(pqlfuzz.SOURCES))
def test_any_input_gives_pqlerror_or_a_value_in_time(generator):
    @SLICE
    @given(pqlfuzz.SOURCES[generator], pqlfuzz.profiles, pqlfuzz.events)
    def run(source, profile, events):
        pqlfuzz.check_one(source, profile, events)

    run()


# Regressions: a regular expression with repeats in sequence (no nesting) backtracked
# polynomially; ".*.*.*.*.*.*.*.*.*.*!" on 22 characters took 7.7 s.


def test_a_regex_with_too_many_repeats_is_refused_on_save():
    with pytest.raises(PQLError, match="repeated parts") as caught:
        pql.compile('name matches ".*.*.*.*.*!"')
    assert caught.value.column == 14
    with pytest.raises(PQLError, match="optional parts"):
        pql.compile('name matches "' + "a?" * 11 + 'a"')


@pytest.mark.parametrize(
    "pattern",
    [
        ".*.*.*.*!",
        ".*.*!",
        ".*!",
        "^.*.*.*.*!",
        "\\\\d+\\\\d+\\\\d+\\\\d+x",
        "a?a?a?a?a?a?a?a?a?a?.*.*.*.*!",
    ],
)
def test_an_allowed_regex_stays_fast_on_long_text(pattern):
    rule = pql.compile(f'name matches "{pattern}"')
    for size in (10, 1_000, 100_000):
        started = time.perf_counter()
        assert rule.evaluate(profile={"name": "a" * size}) is False
        assert time.perf_counter() - started < 0.1, (pattern, size)


def test_regex_limits_keep_ordinary_patterns_working():
    email = pql.compile('email matches "^[\\\\w.+-]+@[\\\\w-]+\\\\.[a-z]{2,}$"')
    assert email.evaluate(profile={"email": "ann.lee+offers@example.com"}) is True
    assert pql.evaluate(
        'url matches "https?://(www\\\\.)?x\\\\.com/?"',
        profile={"url": "see https://x.com/" + "y" * 5000},
    )
    assert regex.max_text("(?i)gold") >= 1_000_000
    assert regex.repeats("\\(?\\d+\\)?[a-z]{2}(?:x)*?") == (2, 2)
