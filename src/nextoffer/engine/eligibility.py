"""Is this offer eligible for this profile, now? Calendar, rules, segments, constraints.

An :class:`Evaluation` holds one request's inputs (profile, events, context, ``now``) and
caches what does not depend on the candidate: a rule that never mentions ``offer`` is
evaluated once per request, segment membership is read once. Every check returns ``None``
when it passes and a :class:`Failure` (a :class:`~nextoffer.engine.explain.Reason` and
detail) when it does not, so the happy path allocates nothing.

A rule that raises while evaluating makes *that* offer (or criterion) ineligible with
``RULE_ERROR``/``CONSTRAINT_ERROR``; it never fails the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nextoffer.engine.explain import Reason
from nextoffer.engine.model import (
    CompileRule,
    ConstraintType,
    Offer,
    ProfileConstraint,
    Rule,
    SegmentRef,
)
from nextoffer.errors import PQLError

#: Segment membership statuses that count as "member" (ranking-formula examples use both).
MEMBER_STATUSES = frozenset({"realized", "existing"})


@dataclass(slots=True)  # not frozen: built on the hot path; never mutated
class Failure:
    """Why a check did not pass."""

    reason: Reason
    detail: str | None = None
    rule_id: str | None = None
    counter: int | None = None
    limit: int | None = None


#: Not in a cache (``None`` is a value a rule may return).
MISSING: Any = object()
_MISSING = MISSING
_NOT_STARTED = Failure(Reason.NOT_STARTED)
_EXPIRED = Failure(Reason.EXPIRED)
_QUIET_RULE_FALSE = Failure(Reason.RULE_FALSE)


class Evaluation:
    """The request-side inputs of eligibility, with per-request caches."""

    __slots__ = (
        "_invariant",
        "_membership",
        "cached",
        "compile_rule",
        "context",
        "events",
        "explain",
        "now",
        "profile",
        "segment_rules",
    )

    def __init__(
        self,
        *,
        profile: Mapping[str, Any],
        events: Sequence[Mapping[str, Any]],
        context: Mapping[str, Any],
        now: datetime,
        explain: bool,
        compile_rule: CompileRule | None = None,
        segment_rules: Mapping[str, Any] | None = None,
    ) -> None:
        self.profile = profile
        #: Segment definitions by id (compiled rules): membership evaluated on this profile.
        self.segment_rules = segment_rules or {}
        self.events = events
        self.context = context
        self.now = now
        self.explain = explain
        self.compile_rule = compile_rule
        #: Rule -> result or _Raised (keyed by the object: hashing it reads no more memory,
        #: where its ``@id`` string may not be in the CPU's caches); "segment:<id>" ->
        #: membership by a segment definition.
        self._invariant: dict[Rule | str, Any] = {}
        #: The same cache, read by the selection's inline check (read only there).
        self.cached: Mapping[Rule | str, Any] = self._invariant
        self._membership: dict[str | None, frozenset[str]] | None = None

    # ---- rules -----------------------------------------------------------------------
    def _run(self, rule: Rule, offer: Offer | None) -> Any:
        evaluate = rule.evaluate
        if evaluate is None:
            return _Raised(rule.problem or "the rule is unusable")
        variables = {"offer": offer.variable} if offer is not None and rule.uses_offer else None
        try:
            return evaluate(
                profile=self.profile,
                events=self.events,
                now=self.now,
                context=self.context,
                variables=variables,
            )
        except Exception as error:  # any run-time failure disqualifies, never propagates
            return _Raised(f"{type(error).__name__}: {error}")

    def value(self, rule: Rule, offer: Offer | None) -> Any:
        """The rule's (or formula's) value for this request and candidate; cached when it
        cannot depend on the candidate. A failure is returned as a :class:`_Raised`."""
        if rule.uses_offer:
            return self._run(rule, offer)
        result = self._invariant.get(rule, _MISSING)
        return result if result is not _MISSING else self.invariant(rule)

    def holds(self, rule: Rule) -> bool:
        """Does an offer-independent ``rule`` hold for this request? A failure does not."""
        result = self._invariant.get(rule, _MISSING)
        if result is _MISSING:
            result = self.invariant(rule) if not rule.uses_offer else self.value(rule, None)
        return result is True or (type(result) is not _Raised and _truthy(result))

    def invariant(self, rule: Rule) -> Any:
        """The value of a rule that does not read ``offer``, not yet in the cache: run,
        cached for the rest of the request, returned (a failure as a :class:`_Raised`).
        The inline check of plain candidates (``Offer.plain``), :meth:`value` and
        :meth:`holds` call it when the cache misses."""
        result = self._invariant[rule] = self._run(rule, None)
        return result

    def rule(
        self, rule: Rule, offer: Offer | None, *, false: Reason, error: Reason
    ) -> Failure | None:
        """``None`` when ``rule`` holds, else the failure (with the false part when explaining)."""
        result = self.value(rule, offer)
        if type(result) is _Raised:
            return Failure(error, result.message, rule.at_id)
        if result is True or (result is not False and _truthy(result)):
            return None
        detail = self._false_part(rule, offer) if self.explain else None
        return Failure(false, detail, rule.at_id)

    def _false_part(self, rule: Rule, offer: Offer | None) -> str | None:
        """The first top-level ``and`` operand that is false (explain mode only)."""
        parts = conjuncts(rule.source)
        if self.compile_rule is None or parts is None or len(parts) < 2:
            return rule.source or None
        variables = {"offer": offer.variable} if offer is not None else None
        for part in parts:
            try:
                compiled = self.compile_rule(part, format="pql/text", kind="rule")
                value = compiled.evaluate(
                    profile=self.profile,
                    events=self.events,
                    now=self.now,
                    context=self.context,
                    variables=variables,
                )
            except Exception:  # the whole rule is reported instead; explain must not fail
                return rule.source
            if not _truthy(value):
                return part
        return rule.source

    # ---- segments --------------------------------------------------------------------
    def _segments(self) -> dict[str | None, frozenset[str]]:
        if self._membership is None:
            membership: dict[str | None, set[str]] = {None: set()}
            raw = self.profile.get("segmentMembership")
            if isinstance(raw, Mapping):
                for namespace, segments in raw.items():
                    if not isinstance(segments, Mapping):
                        continue
                    for segment_id, entry in segments.items():
                        status = entry.get("status") if isinstance(entry, Mapping) else None
                        if status in MEMBER_STATUSES:
                            membership.setdefault(namespace, set()).add(segment_id)
                            membership[None].add(segment_id)
            self._membership = {k: frozenset(v) for k, v in membership.items()}
        return self._membership

    def member(self, segment: SegmentRef) -> bool:
        """Is the profile a member of ``segment``: ``realized``/``existing`` in its
        ``segmentMembership``, or — for a segment definition of the tenant — the
        definition's rule true of this profile now? Either source suffices."""
        if segment.segment_id in self._segments().get(segment.namespace, frozenset()):
            return True
        rule = self.segment_rules.get(segment.segment_id)
        if rule is None:
            return False
        key = "segment:" + segment.segment_id
        found = self._invariant.get(key)
        if found is None:
            try:
                found = rule.evaluate(profile=self.profile, events=self.events, now=self.now)
            except PQLError:
                found = False  # a definition that fails on this profile does not include it
            found = self._invariant[key] = found is True
        return bool(found)

    # ---- constraints -----------------------------------------------------------------
    def constraint(
        self,
        constraint: ProfileConstraint,
        offer: Offer | None,
        *,
        offer_level: bool = False,
    ) -> Failure | None:
        """Check a profile constraint; ``offer`` is bound for rules that read it."""
        kind = constraint.type
        if kind is ConstraintType.NONE:
            return None
        if kind is ConstraintType.ANY_SEGMENTS or kind is ConstraintType.ALL_SEGMENTS:
            wanted = constraint.segments
            hits = [segment for segment in wanted if self.member(segment)]
            ok = bool(hits) if kind is ConstraintType.ANY_SEGMENTS else len(hits) == len(wanted)
            if ok and wanted:
                return None
            reason = Reason.SEGMENT_NOT_MET if offer_level else Reason.CONSTRAINT_SEGMENT_NOT_MET
            missing = [s.segment_id for s in wanted if s not in hits]
            return Failure(
                reason, f"{kind.value}: not a member of {', '.join(missing) or '(none)'}"
            )
        false, error = (
            (Reason.RULE_FALSE, Reason.RULE_ERROR)
            if offer_level
            else (Reason.CONSTRAINT_FALSE, Reason.CONSTRAINT_ERROR)
        )
        for rule in constraint.rules:
            failure = self.rule(rule, offer, false=false, error=error)
            if failure is not None:
                return failure
        return None

    def offer(self, offer: Offer) -> Failure | None:
        """The candidate-only stages: calendar, offer rule, offer segments.

        Not cached per offer (a candidate is usually met once); the rule result is cached.
        """
        if offer.problem is not None:
            return Failure(Reason.INVALID_OFFER, offer.problem)
        now = self.now
        if offer.start is not None and now < offer.start:
            return _NOT_STARTED
        if offer.end is not None and now > offer.end:
            return _EXPIRED
        rule = offer.rule
        if rule is not None:
            # The hot path of every decision, inlined: one call into the compiled rule.
            evaluate = rule.evaluate
            if evaluate is not None and not rule.uses_offer and rule not in self._invariant:
                try:
                    result = evaluate(
                        profile=self.profile,
                        events=self.events,
                        now=now,
                        context=self.context,
                        variables=None,
                    )
                except Exception as error:  # any run-time failure disqualifies the offer
                    result = _Raised(f"{type(error).__name__}: {error}")
                self._invariant[rule] = result
                if result is True:
                    pass
                elif result is False and not self.explain:
                    return _QUIET_RULE_FALSE  # nobody reads the details without explain
                elif type(result) is _Raised or not _truthy(result):
                    return self.rule(rule, offer, false=Reason.RULE_FALSE, error=Reason.RULE_ERROR)
            else:
                failure = self.rule(rule, offer, false=Reason.RULE_FALSE, error=Reason.RULE_ERROR)
                if failure is not None:
                    return failure
        if offer.constraint is not None:
            return self.constraint(offer.constraint, offer, offer_level=True)
        return None


class _Raised:
    """A rule's run-time failure, kept as a value so it can be cached like a result."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def is_failure(value: Any) -> bool:
    return type(value) is _Raised


def failure_message(value: Any) -> str:
    return value.message if type(value) is _Raised else ""


def _truthy(value: Any) -> bool:
    """PQL's boolean-position coercion (pql.md §2.5 rule 4) for a rule's top-level value."""
    if value is None or value is False:
        return False
    if isinstance(value, (list, tuple, set, frozenset)):
        return len(value) > 0
    return True


_SPLIT_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[()\[\]{}]|&&|\|\||=>|[A-Za-z_][A-Za-z0-9_]*|.', re.S)
#: Top-level words after which splitting on ``and`` would change the meaning.
_UNSPLITTABLE = frozenset(
    {
        "or",
        "select",
        "exists",
        "forall",
        "let",
        "sum",
        "average",
        "min",
        "max",
        "over",
        "between",
        "chain",
        "||",
        "=>",
    }
)


def conjuncts(source: str) -> list[str] | None:
    """Split ``a and b and c`` at top-level ``and``; ``None`` if that would not be faithful.

    Used only to name the failing part of a false rule in the explain trace.
    """
    parts: list[str] = []
    depth = 0
    start = 0
    previous = ""
    for match in _SPLIT_TOKEN.finditer(source):
        token = match.group()
        lowered = token.lower()
        if token in "([{":
            depth += 1
        elif token in ")]}":
            depth -= 1
        elif depth == 0 and lowered in _UNSPLITTABLE and previous != ".":
            return None
        elif depth == 0 and (lowered == "and" or token == "&&") and previous != ".":
            parts.append(source[start : match.start()].strip())
            start = match.end()
        if not token.isspace():
            previous = token
    parts.append(source[start:].strip())
    return parts if all(parts) else None
