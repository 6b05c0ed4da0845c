"""Offer pools: a collection's members in priority order, by placement, with the rule
parts every candidate of a placement needs (``Pool.required``), for the catalog's builder
(``build.py``). A pool of the previous build is patched when few of its offers moved,
rather than built again, sharing its persistent parts (``SortedChunks``, ``Map``).
"""

from __future__ import annotations

import re
from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from immutables import Map, MapMutation

from nextoffer.engine.model import CompileRule, Offer, Pool, Rule
from nextoffer.engine.sorted_chunks import SortedChunks

#: A rule or part that reads the ``offer`` variable: it depends on the candidate.
OFFER_WORD = re.compile(r"\boffer\b")

#: A rule's compiled form, its conjuncts, and those that do not read ``offer``.
Parts = tuple[Any, tuple[str, ...], frozenset[str]]


@dataclass(slots=True)
class PoolMemo:
    """A collection's pool as built, and what patching it needs."""

    stamp: tuple[str, int]
    pool: Pool
    #: Per placement, what ``Pool.required`` is computed from (kept, not recounted).
    tallies: dict[str, Tally]
    #: ``@id``s of the capped offers of ``pool.by_placement`` (``Catalog.capped_offer_ids``).
    capped: frozenset[str]


def _add_parts(
    counts: dict[str, int] | MapMutation[str, int], parts: frozenset[str], sign: int
) -> None:
    """Add ``sign`` to the count of each of ``parts``; a count that reaches 0 goes."""
    for part in parts:
        left = counts.get(part, 0) + sign
        if left:
            counts[part] = left
        else:
            del counts[part]


@dataclass(slots=True)
class Tally:
    """The rule parts of a placement's candidates, counted (see :meth:`Pools._required`)."""

    #: Part → how many counted candidates' rules have it (parts not reading ``offer``).
    counts: dict[str, int] | Map[str, int]
    #: Candidates counted: approved, usable, their rule split into parts.
    counted: int = 0
    #: Candidates that leave nothing shared (no rule, or a rule that cannot be split).
    blockers: int = 0

    def copy(self) -> Tally:
        """A tally to change while this one stays as it is: the counts become a persistent
        map (shared, not copied: a pool of 10,000 offers with their own rules counts
        tens of thousands of parts)."""
        counts = self.counts if isinstance(self.counts, Map) else Map(self.counts)
        return Tally(counts, self.counted, self.blockers)


def sort_key(offer: Offer) -> tuple[int, str]:
    """The order of a pool's offers: by priority, highest first, then by ``@id``."""
    return (-offer.priority, offer.at_id)


def _chunked(members: Collection[Offer]) -> SortedChunks[Offer]:
    """A pool's members as the sorted chunks this module builds them as."""
    if isinstance(members, SortedChunks):
        return members
    return SortedChunks.of(sort_key, sorted(members, key=sort_key))


#: Offers in (-priority, @id) order, shared chunk by chunk between builds.
NO_OFFERS: SortedChunks[Offer] = SortedChunks(sort_key)
EMPTY_POOL = Pool(NO_OFFERS, MappingProxyType({}))


def _position(ordered: list[Offer], offer: Offer) -> int:
    """Where ``offer`` is in ``ordered`` (sorted by :func:`sort_key`, ``@id``s unique)."""
    at = bisect_left(ordered, sort_key(offer), key=sort_key)
    if at == len(ordered) or ordered[at] is not offer:
        raise ValueError(f"{offer.at_id} is not where its order puts it")
    return at


class Pools:
    """One build's pools: the tallies and rule parts they are computed from, each rule's
    parts kept for the next build (``own_parts``), the shared parts compiled once."""

    def __init__(
        self,
        compile_rule: CompileRule,
        pause: Callable[[], None],
        previous_parts: Map[str, Parts] | None = None,
    ) -> None:
        self.compile_rule = compile_rule
        #: Called between small pieces of the work (``build_catalog(pause=…)``).
        self.pause = pause
        #: The previous build's rule parts (by the rule's ``@id``), to reuse.
        self.previous_parts = previous_parts
        #: Rule parts found this build (a dict), or the previous build's being patched.
        self.own_parts: dict[str, Parts] | MapMutation[str, Parts] = {}
        #: ``id()`` of a pool of this build → its capped offers' ``@id``s (:meth:`capped_of`).
        self.capped: dict[int, frozenset[str]] = {}
        self.conjuncts: dict[str, Rule | None] = {}  # shared rule parts, by their text

    def of(self, members: Iterable[Offer]) -> Pool:
        """The pool of ``members`` (a criterion's own option list)."""
        return self.new(members)[0]

    def new(self, members: Iterable[Offer]) -> tuple[Pool, dict[str, Tally]]:
        """The pool of ``members``, built whole, and its placements' tallies."""
        ordered = tuple(sorted(set(members), key=sort_key))
        by_placement: dict[str, list[Offer]] = {}
        pause = self.pause
        for offer in ordered:
            pause()
            if offer.status == "approved":
                for placement in offer.representations:
                    by_placement.setdefault(placement, []).append(offer)
        return self._from(ordered, by_placement)

    def _from(
        self,
        ordered: tuple[Offer, ...],
        by_placement: dict[str, list[Offer]],
        tallies: dict[str, Tally] | None = None,
    ) -> tuple[Pool, dict[str, Tally]]:
        if tallies is None:
            tallies = {}
            for placement, offers in by_placement.items():
                tally = tallies[placement] = Tally({})
                for offer in offers:
                    self.pause()
                    self._count(tally, offer, 1)
                tally.counts = Map(tally.counts)  # kept: later builds change copies of it
        required = {p: self._required(by_placement[p], t) for p, t in tallies.items()}
        pool = Pool(
            SortedChunks.of(sort_key, ordered),
            MappingProxyType({p: tuple(o) for p, o in by_placement.items() if o}),
            MappingProxyType({p: r for p, r in required.items() if r}),
        )
        self.capped[id(pool)] = self.capped_of(pool)
        return pool, tallies

    def capped_of(self, pool: Pool) -> frozenset[str]:
        """``@id``s of the capped offers of ``pool.by_placement`` (kept per pool of this
        build; found for a pool made elsewhere, such as a criterion's own option list)."""
        found = self.capped.get(id(pool))
        if found is None:
            found = frozenset(
                offer.at_id
                for offers in pool.by_placement.values()
                for offer in offers
                if offer.capped
            )
        return found

    def patched(
        self,
        old: PoolMemo,
        belongs: Callable[[Offer], bool],
        offers_moved: tuple[list[Offer], list[Offer]],
    ) -> PoolMemo | None:
        """``old``'s pool with the offers that left or changed taken out and the new or
        rebuilt ones that belong put in, in order (the pool :meth:`of` would build);
        ``old`` itself when none moved, ``None`` when so many did that building it again
        is as cheap. (The collection is the same: an offer of the previous build was a
        member exactly when it ``belongs``.)"""
        gone, came = offers_moved
        removed = [offer for offer in gone if belongs(offer)]
        added = [offer for offer in came if belongs(offer)]
        if not removed and not added:
            return old
        pool = old.pool
        if len(added) + len(removed) > max(16, len(pool.members) // 8):
            return None
        pause = self.pause
        pause()
        ordered = _chunked(pool.members)  # persistent: changed chunk by chunk
        by_placement = dict(pool.by_placement)
        tallies = dict(old.tallies)
        pause()
        capped = set(old.capped)
        moved: dict[str, list[Offer]] = {}

        def placed(placement: str) -> list[Offer]:
            # A placement's list and tally are copied the first time they change.
            if placement not in moved:
                pause()
                moved[placement] = [*by_placement.get(placement, ())]
                found = tallies.get(placement)
                tallies[placement] = found.copy() if found else Tally({})
            return moved[placement]

        for offer in removed:
            ordered = ordered.remove(offer)
            if offer.status == "approved":
                capped.discard(offer.at_id)
                for placement in offer.representations:
                    listed = placed(placement)
                    del listed[_position(listed, offer)]
                    self._count(tallies[placement], offer, -1)
        for offer in added:
            ordered = ordered.insert(offer)
            if offer.status == "approved":
                if offer.capped and offer.representations:
                    capped.add(offer.at_id)
                for placement in offer.representations:
                    insort(placed(placement), offer, key=sort_key)
                    self._count(tallies[placement], offer, 1)
        pause()
        for placement, listed in moved.items():
            pause()
            if listed:
                by_placement[placement] = tuple(listed)
            else:
                del by_placement[placement]
                del tallies[placement]
        required = dict(pool.required)
        for placement in moved:
            pause()
            found = (
                self._required(by_placement[placement], tallies[placement])
                if placement in by_placement
                else ()
            )
            if found:
                required[placement] = found
            else:
                required.pop(placement, None)
        pause()
        new = Pool(ordered, MappingProxyType(by_placement), MappingProxyType(required))
        pause()
        return PoolMemo(old.stamp, new, tallies, frozenset(capped))

    def _count(self, tally: Tally, offer: Offer, sign: int) -> None:
        """Add (``sign`` 1) or take out (-1) one candidate's rule parts from ``tally``.

        Offers that can never be eligible (a problem, an unusable rule) do not count; an
        offer without a rule, or with a rule the compiler cannot split, blocks sharing.
        """
        rule = offer.rule
        if offer.problem is not None or (rule is not None and rule.compiled is None):
            return
        parts, mine = self._own_parts(rule) if rule is not None else ((), frozenset())
        if not parts:
            tally.blockers += sign
            return
        tally.counted += sign
        counts = tally.counts
        if isinstance(counts, Map):  # a persistent map: changed through a mutation, replaced
            mutation = counts.mutate()
            _add_parts(mutation, mine, sign)
            tally.counts = mutation.finish()
        else:
            _add_parts(counts, mine, sign)

    def _required(self, offers: Sequence[Offer], tally: Tally) -> tuple[Rule, ...]:
        """The rule parts every one of ``offers`` needs (see ``Pool.required``): those the
        tally counts in every counted candidate, in the order of the first one's rule."""
        if tally.blockers or not tally.counted:
            return ()
        for offer in offers:  # the first counted candidate (almost always the first)
            rule = offer.rule
            if offer.problem is None and rule is not None and rule.compiled is not None:
                parts, mine = self._own_parts(rule)
                if len(parts) == 1 and parts[0] in mine:
                    # The whole rule is the part: one evaluation (and cache entry) serves both.
                    self.conjuncts.setdefault(parts[0], rule)
                # A part every candidate has is one of this one's: counted by all of them.
                counts, counted = tally.counts, tally.counted
                shared = dict.fromkeys(p for p in parts if p in mine and counts.get(p) == counted)
                break
        else:
            return ()
        found = (self._conjunct(part) for part in shared)
        return tuple(rule for rule in found if rule is not None)

    def _own_parts(self, rule: Rule) -> tuple[tuple[str, ...], frozenset[str]]:
        """A rule's conjuncts, and those of them that do not read ``offer`` (kept by the
        rule's ``@id`` for the next build, with the compiled rule they were read from)."""
        found = self.own_parts.get(rule.at_id)
        if (found is None or found[0] is not rule.compiled) and self.previous_parts is not None:
            found = self.previous_parts.get(rule.at_id)
        if found is None or found[0] is not rule.compiled:
            parts = tuple(getattr(rule.compiled, "conjuncts", None) or ())
            found = (
                rule.compiled,
                parts,
                frozenset(p for p in parts if OFFER_WORD.search(p) is None),
            )
            self.own_parts[rule.at_id] = found
        elif rule.at_id not in self.own_parts:
            self.own_parts[rule.at_id] = found
        return found[1], found[2]

    def _conjunct(self, source: str) -> Rule | None:
        """A shared rule part compiled on its own (once per build); ``None`` if it cannot be."""
        if source not in self.conjuncts:
            try:
                compiled = self.compile_rule(source, format="pql/text", kind="rule")
            except Exception:  # then it is simply not checked up front; the rules still are
                self.conjuncts[source] = None
            else:
                self.conjuncts[source] = Rule(f"conjunct:{source}", source, compiled, False)
        return self.conjuncts[source]
