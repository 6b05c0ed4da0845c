"""The public API: compile / CompiledRule / evaluate, result shapes, inputs, safety."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor

import pytest

from nextoffer import pql
from nextoffer.errors import PQLError


def test_compiled_rule_attributes_and_reuse():
    rule = pql.compile('homeAddress.countryISO = "CA" and person.birthYear = 1985')
    assert (rule.source, rule.format, rule.kind) == (
        'homeAddress.countryISO = "CA" and person.birthYear = 1985',
        "pql/text",
        "rule",
    )
    assert rule.profile_paths == ("homeAddress.countryISO", "person.birthYear")
    assert rule.context_paths == ()
    ca = {"homeAddress": {"countryISO": "CA"}, "person": {"birthYear": 1985}}
    assert rule.evaluate(profile=ca) is True
    assert rule.evaluate(profile={}) is False


def test_rules_return_booleans_even_for_non_boolean_expressions():
    assert pql.compile("homeAddress").evaluate(profile={"homeAddress": {"x": 1}}) is True
    assert (
        pql.compile("person.favoriteColors").evaluate(profile={"person": {"favoriteColors": []}})
        is False
    )
    assert pql.compile("if(a, 1, 0)").evaluate(profile={"a": True}) is True


def test_formulas_return_numbers_or_none():
    formula = pql.compile("offer.rank.priority * 2", kind="formula")
    assert formula.evaluate(profile={}, variables={"offer": {"rank": {"priority": 4}}}) == 8
    assert formula.evaluate(profile={}, variables={"offer": {"rank": {}}}) is None
    assert pql.compile("42 = 11", kind="formula").evaluate(profile={}) is None


def test_module_evaluate_returns_what_the_expression_yields():
    assert pql.evaluate("1 + 2", profile={}) == 3
    assert pql.evaluate("a", profile={"a": "text"}) is True
    assert pql.evaluate("missing", profile={}) is False


def test_variables_take_precedence_over_profile_fields():
    rule = pql.compile("offer.rank.priority > 1")
    profile = {"offer": {"rank": {"priority": 5}}}
    assert rule.evaluate(profile=profile) is True
    assert rule.evaluate(profile=profile, variables={"offer": {"rank": {"priority": 0}}}) is False
    assert rule.profile_paths == ()  # offer is a named input, not a profile attribute


def test_the_variables_variant_is_compiled_on_first_use_and_kept():
    rule = pql.compile("age > 18 and offer.rank.priority > 1 and xEvent.count() = 0")
    profile = {"age": 30, "offer": {"rank": {"priority": 5}}}
    low = {"offer": {"rank": {"priority": 0}}}
    assert rule.evaluate(profile=profile) is True
    assert rule.evaluate(profile=profile, variables=low) is False
    code = rule.evaluate.__code__
    cells = dict(zip(code.co_freevars, rule.evaluate.__closure__, strict=True))
    holder = cells["_k0"].cell_contents  # the variables variant's holder
    variant = holder[0]
    assert rule.evaluate(profile=profile, variables={"age": 3}) is False
    assert holder[0] is variant
    assert rule.evaluate(profile=profile, variables={}) is True  # empty: the plain function


def test_the_variables_variant_is_safe_to_build_from_many_threads():
    rules = [pql.compile(f'offer.rank.priority > {n} and tier = "gold"') for n in range(20)]
    profile = {"tier": "gold"}

    def check(index: int) -> bool:
        rule = rules[index % len(rules)]
        expected = index % len(rules) < 10
        return (
            rule.evaluate(profile=profile, variables={"offer": {"rank": {"priority": 10}}})
            is expected
        )

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(check, range(400)))


def test_context_and_events_inputs():
    rule = pql.compile('@{s;version=1}.weather = "hot" and xEvent.count() = 1')
    assert rule.context_paths == ("s;version=1.weather",)
    assert rule.evaluate(profile={}, events=[{}], context={"s;version=1": {"weather": "hot"}})
    assert rule.evaluate(profile={}, events=[{}]) is False


def test_pql_json_format():
    doc = {
        "nodeType": "fnApply",
        "fnName": ">=",
        "params": [
            {"nodeType": "fieldLookup", "fieldName": "age"},
            {"nodeType": "literal", "value": 18},
        ],
    }
    rule = pql.compile(doc, format="pql/json")
    assert rule.evaluate(profile={"age": 20}) is True
    assert rule.profile_paths == ("age",)
    assert pql.compile("age >= 18", format="pql/json").evaluate(profile={"age": 1}) is False
    with pytest.raises(PQLError, match="pql/json: unsupported nodeType"):
        pql.compile('{"nodeType": "bogus"}', format="pql/json")


def test_data_of_the_wrong_type_gives_false_not_an_exception():
    rule = pql.compile(
        'a.b > 1 and c.startsWith("x") and d.count() > 0 and e.get("k") = 1 '
        "and f occurs today and g + 1 > 0 and h[x = 1]"
    )
    hostile = {"a": "str", "b": None, "c": 5, "d": 3, "e": [1], "f": {}, "g": "1", "h": 7}
    assert rule.evaluate(profile=hostile, now="2024-01-01T00:00:00Z") is False
    assert rule.evaluate(profile=None, events="not a list", now="2024-01-01T00:00:00Z") is False


def test_user_text_is_data_never_python():
    # Python-looking names are just field names looked up in the profile.
    rule = pql.compile('__class__.__name__ = "dict" or __builtins__.open = 1')
    assert rule.evaluate(profile={}) is False
    assert pql.evaluate('__class__ = "x"', profile={"__class__": "x"}) is True
    with pytest.raises(PQLError, match=r"unsupported function '(system|__import__)'"):
        pql.compile('__import__("os").system("true")')


def test_evaluate_only_raises_pqlerror_for_bad_input():
    with pytest.raises(PQLError):
        pql.evaluate("a =", profile={})
    with pytest.raises(PQLError, match="pql/text source must be a string"):
        pql.evaluate(42, profile={})  # type: ignore[arg-type]


def test_compiled_rule_evaluate_is_keyword_only_by_contract():
    documented = inspect.signature(pql.CompiledRule.evaluate).parameters
    assert list(documented) == ["self", "profile", "events", "now", "context", "variables"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(documented.values())[1:])
    rule = pql.compile("a = 1")
    bound = inspect.signature(rule.evaluate).parameters
    assert list(bound) == ["profile", "events", "now", "context", "variables"]
    assert (
        rule.evaluate(profile={"a": 1}, events=None, now=None, context=None, variables=None) is True
    )


def test_top_level_inputs_may_be_any_mapping():
    from types import MappingProxyType

    rule = pql.compile("a = 1 and offer.b = 2 and @{s}.c = 3")
    assert (
        rule.evaluate(
            profile=MappingProxyType({"a": 1}),
            variables=MappingProxyType({"offer": {"b": 2}}),
            context=MappingProxyType({"s": {"c": 3}}),
        )
        is True
    )


def test_conjuncts_are_the_top_level_and_operands_as_canonical_text():
    rule = pql.compile('age >= 18  and (tier = "gold" or vip) and not optOut')
    assert rule.conjuncts == ("age >= 18", 'tier = "gold" or vip', "not optOut")
    assert pql.compile('tier = "gold" or vip').conjuncts == ('tier = "gold" or vip',)


def test_rules_that_differ_only_in_their_values_share_code_and_keep_their_own_values():
    # One code object per shape (the values are in each rule's closure): a decision that
    # evaluates many such rules runs bytecode that is already in the CPU's caches.
    shape = 'age >= {} and country in ["{}", "CA"] and tier = "{}" and points > {} and optIn = true'
    low = pql.compile(shape.format(18, "US", "gold", 100))
    high = pql.compile(shape.format(40, "FR", "silver", 2.5))
    assert low.evaluate.__code__ is high.evaluate.__code__
    profile = {"age": 30, "country": "US", "tier": "gold", "points": 101, "optIn": True}
    assert low.evaluate(profile=profile) is True
    assert high.evaluate(profile=profile) is False
    assert high.evaluate(profile={**profile, "age": 41, "country": "FR", "tier": "silver"}) is True
    # ``true`` stays a constant of the code (it is tested with ``is``): 1 is not true.
    assert low.evaluate(profile={**profile, "optIn": 1}) is False
