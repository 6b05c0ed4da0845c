"""The checks of an instance body before it is stored, and of many bodies at once in
worker processes (``nextoffer import library``).

:func:`check_body` is what every create and replace runs (``service/repository.py``).
Checking an instance body — its JSON Schema, and above all compiling its PQL — is most of
an import's CPU and touches no database, so :class:`ParallelChecks` spreads the bodies
over worker processes (``spawn``: a fresh interpreter each, never a fork of a process that
has threads). Each worker runs :func:`check_body` on a slice of the bodies holding a rule
not compiled yet and hands back the problems and the rules it compiled, which the parent
adopts into its compiled-rule cache (so a server started after the import finds them
compiled, as if the parent had compiled them); the parent checks the other bodies
meanwhile.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from nextoffer.engine.frequency import cap_rules
from nextoffer.errors import NextOfferError, PayloadTooLarge, Unprocessable
from nextoffer.repository import rules, strategies, validation
from nextoffer.repository.objects import DECISION, PERSONALIZED_OFFER, RANKING_STRATEGY, ObjectType
from nextoffer.service.compiled_rules import CompiledRules, Key
from nextoffer.service.heap import bulk_heap

#: Bodies per task sent to a worker (a few hundred milliseconds of work each).
SLICE = 500

#: Checks many bodies (type, body) at once: the problems found, each pointer prefixed with
#: ``/<index>``; told ``(n)`` as each ``n`` more are checked.
BodyChecks = Callable[
    [Sequence[tuple[ObjectType, dict[str, Any]]], Callable[[int], None] | None],
    list[dict[str, str]],
]


def check_body(
    object_type: ObjectType, body: dict[str, Any], prefix: str, compile_rule: rules.Compile
) -> None:
    """The checks of one instance body before it is stored (schema, PQL, strategies, caps);
    raises the first kind of problem found, every pointer prefixed with ``prefix``."""
    validation.validate(object_type, body, prefix=prefix)
    rules.check(object_type, body, prefix=prefix, compile_rule=compile_rule)
    if object_type is RANKING_STRATEGY:
        strategies.check(body, prefix=prefix)
    elif object_type is DECISION:
        strategies.check_decision(body, prefix=prefix)
    if object_type is PERSONALIZED_OFFER:
        cap_rules(body, prefix=prefix)  # raises for a bad capping rule, naming it
        specs = body.get("xdm:frequencyCappingConstraints") or []
        for index, spec in enumerate(specs):
            query = spec.get("xdm:customQuery")
            if isinstance(query, str):
                where = f"{prefix}/xdm:frequencyCappingConstraints/{index}/xdm:customQuery"
                rules.check_source(query, kind="rule", pointer=where, compile_rule=compile_rule)


def problems_of(exc: NextOfferError) -> list[dict[str, str]]:
    """The ``errors`` list of a validation error (or the one problem it names)."""
    listed = exc.extra.get("errors")
    if isinstance(listed, list) and listed:
        return [
            {"pointer": str(e.get("pointer", "")), "message": str(e.get("message", ""))}
            for e in listed
        ]
    return [{"pointer": exc.pointer or "", "message": exc.detail}]


def check_slice(
    items: Sequence[tuple[int, ObjectType, dict[str, Any]]],
) -> tuple[list[tuple[int, list[dict[str, str]]]], list[tuple[Key, bytes]]]:
    """((index, problems) of each item with some, compiled rules) of ``items`` (index,
    type, body): runs in a worker process."""
    compiled = CompiledRules(None, record=True)
    problems: list[tuple[int, list[dict[str, str]]]] = []
    with bulk_heap():
        for index, object_type, body in items:
            try:
                check_body(object_type, body, f"/{index}", compiled.get)
            except (Unprocessable, PayloadTooLarge) as exc:
                problems.append((index, problems_of(exc)))
    return problems, compiled.take_new()


class ParallelChecks:
    """``Repository.create_many``'s ``checks``: the bodies whose rule is not compiled yet
    (in ``rules``) go to ``processes`` worker processes, and the rules they compile are
    adopted into ``rules``; the others (most kinds hold no rule, and a known rule is a
    cache hit) are checked here meanwhile. Problems come back in the items' order."""

    def __init__(self, rules: CompiledRules, processes: int) -> None:
        self._rules = rules
        self._processes = max(1, processes)

    def _compiles(self, object_type: ObjectType, body: dict[str, Any]) -> bool:
        source = rules.source_of(object_type, body)
        return source is not None and not self._rules.known(
            source.text, format=source.format, kind=source.kind
        )

    def __call__(
        self,
        bodies: Sequence[tuple[ObjectType, dict[str, Any]]],
        progress: Callable[[int], None] | None,
    ) -> list[dict[str, str]]:
        found: list[tuple[int, list[dict[str, str]]]] = []
        remote = [(i, t, b) for i, (t, b) in enumerate(bodies) if self._compiles(t, b)]
        slices = [remote[start : start + SLICE] for start in range(0, len(remote), SLICE)]
        with contextlib.ExitStack() as stack:
            results = []
            if slices:
                context = multiprocessing.get_context("spawn")
                pool = stack.enter_context(
                    ProcessPoolExecutor(min(self._processes, len(slices)), mp_context=context)
                )
                results = [pool.submit(check_slice, items) for items in slices]
            sent = {i for i, _, _ in remote}
            checked = 0
            for index, (object_type, body) in enumerate(bodies):
                if index in sent:
                    continue
                try:
                    check_body(object_type, body, f"/{index}", self._rules.get)
                except (Unprocessable, PayloadTooLarge) as exc:
                    found.append((index, problems_of(exc)))
                checked += 1
                if progress is not None and checked % 100 == 0:
                    progress(100)
            if progress is not None and checked % 100:
                progress(checked % 100)
            for result, items in zip(results, slices, strict=True):
                problems, compiled = result.result()
                found.extend(problems)
                self._rules.adopt(compiled)
                if progress is not None:
                    progress(len(items))
        found.sort(key=lambda entry: entry[0])
        return [problem for _, listed in found for problem in listed]
