"""CompiledRules: compiled rules kept in a file another process reads instead of compiling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nextoffer import pql
from nextoffer.service.compiled_rules import CompiledRules, fingerprint


class Counting:
    """``pql.compile``, counting its calls (how a test sees what was compiled)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, source: Any, **kwargs: Any) -> pql.CompiledRule:
        self.calls += 1
        return pql.compile(source, **kwargs)


RULES = [f'age >= {n} and country = "US"' for n in range(20)]


def test_a_second_process_loads_what_the_first_compiled(tmp_path: Path) -> None:
    first = CompiledRules(tmp_path, compile_rule=(compiling := Counting()))
    for source in RULES:
        first.get(source)
    assert compiling.calls == 20
    assert first.save() == 20
    assert first.path is not None and first.path.name == f"rules-{fingerprint()}.bin"
    second = CompiledRules(tmp_path, compile_rule=(again := Counting()))
    results = [
        second.get(source).evaluate(profile={"age": 10, "country": "US"}) for source in RULES
    ]
    assert again.calls == 0
    assert results == [n <= 10 for n in range(20)]
    second.get("age < 3")  # a new one is compiled and appended
    assert again.calls == 1 and second.save() == 1
    third = CompiledRules(tmp_path, compile_rule=(last := Counting()))
    for source in [*RULES, "age < 3"]:
        third.get(source)
    assert last.calls == 0


def test_a_damaged_tail_only_costs_compiling_what_it_held(tmp_path: Path) -> None:
    first = CompiledRules(tmp_path)
    for source in RULES[:10]:
        first.get(source)
    first.save()
    assert first.path is not None
    with first.path.open("ab") as file:
        file.write(b"\x10\x00\x00\x00garbage")  # a torn append
    second = CompiledRules(tmp_path, compile_rule=(compiling := Counting()))
    for source in RULES[:12]:
        second.get(source)
    assert compiling.calls == 2


def test_without_a_directory_nothing_is_written_and_memory_still_serves(tmp_path: Path) -> None:
    rules = CompiledRules(None, compile_rule=(compiling := Counting()))
    assert rules.get(RULES[0]) is rules.get(RULES[0])
    assert compiling.calls == 1
    assert rules.save() == 0
    assert list(tmp_path.iterdir()) == []
