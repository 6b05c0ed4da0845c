"""Thompson draws for a ranking strategy's candidates, made in blocks (``strategy.score``).

Each candidate's score is an independent draw from a one-dimensional posterior
(:class:`Posterior`): Beta(α, β) for auto-optimization, N(μ, σ²) for personalized
optimization. A decision walks its candidates best draw first until enough are eligible.
A call of numpy's samplers costs far more than one draw made in bulk (docs/benchmarks.md,
"Cost of a decision"), so draws are made for a *block* of decisions at once and each
decision takes the next row. Rows are independent, so each decision is an exact Thompson
sample.

Two kinds of block:

* :class:`FullBlock` draws every candidate in every row (the reference; cheap for short
  candidate lists).
* :class:`BandedBlock` draws, per row, only the candidates whose draw exceeds a threshold
  ``t`` (the *band*), chosen so that about ``target`` candidates are in it; a walk that
  needs more than the band draws the rest, each conditioned on being at most ``t``. It is
  exact: every candidate's draw still has its posterior's law, independently of the others.
  Membership and values come from an envelope: right of ``t``, a log-concave density ``f``
  lies under its tangent at any ``u`` right of the mode, ``e(x) = f(u)·exp(−λ(x − u))``
  (``λ = −(log f)′(u) > 0``), whose mass right of ``t`` is ``M ≥ P(X > t)``. A candidate
  is *proposed* with probability ``M`` (a unit-rate Poisson process over cells of length
  ``−log(1 − M)``, so a row costs its proposals, not its candidates), its value is
  ``t + Exp(λ)``, and it is kept with probability ``f(x)/e(x)``: kept values have density
  ``f(x)`` on ``x > t``, exactly the law of a draw above ``t``. Beta(a, 1) is drawn by its
  inverse CDF; candidates the envelope does not fit (``M`` large, or ``t`` left of the
  mode) are drawn in full in every row.

Pure: a numpy ``Generator`` is a parameter.
"""

from __future__ import annotations

import array
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

#: Positions per row sorted when a full block is drawn; a walk past them sorts the rest.
_HEAD = 16
#: Candidate lists up to this long have whole rows sorted when a full block is drawn
#: (numpy sorts rows this short as fast as it partitions them).
_SORTED = 256
#: Candidates whose envelope mass ``M`` is at least this are drawn in full in every row.
_ENVELOPE_MAX = 0.75
#: A banded block whose walks ran past the band more often than this share of its rows
#: widens the next block's band by half.
_EXHAUSTED = 0.03


class Scores(NamedTuple):
    """One decision's view of the candidates."""

    #: Candidate positions, best draw first (drawn and sorted as far as the walk goes).
    order: Iterator[int]
    #: The draw each position is ranked by (for the positions the walk has reached).
    draws: Any
    #: The posterior mean reward per candidate (auto: the Beta mean; personalized: ``x·μ``).
    estimates: Sequence[float]
    #: True when this decision served at random (personalized exploration).
    explored: bool


class Posterior:
    """The candidates' posteriors: Beta(``a``, ``b``) when ``beta``, else N(``a``, ``b²``).
    Both are log-concave (Beta with ``a, b ≥ 1``), which the banded draws rely on."""

    __slots__ = ("_means", "a", "b", "beta", "log_norm")

    def __init__(self, beta: bool, a: np.ndarray, b: np.ndarray) -> None:
        self.beta = beta
        self.a = a
        self.b = b
        #: log of each density's normalising constant (Beta: −log B(a, b)).
        if beta:
            lg = math.lgamma
            self.log_norm = np.array(
                [lg(x + y) - lg(x) - lg(y) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
            )
        else:
            self.log_norm = -np.log(b) - 0.5 * math.log(2.0 * math.pi)
        self._means: list[float] | None = None

    def __len__(self) -> int:
        return len(self.a)

    @property
    def estimates(self) -> list[float]:
        """The posterior means (a list: decisions read a few of them, one at a time)."""
        if self._means is None:
            means = self.a / (self.a + self.b) if self.beta else self.a
            self._means = means.tolist()
        return self._means

    def sample(
        self, generator: np.random.Generator, rows: int, where: np.ndarray | None = None
    ) -> np.ndarray:
        """``rows`` independent draws of each candidate (of ``where``), as float32: the
        samplers are faster so, and ranking needs no more digits."""
        a = self.a if where is None else self.a[where]
        b = self.b if where is None else self.b[where]
        if self.beta:
            # Beta(α, β) as X / (X + Y), X ~ Gamma(α), Y ~ Gamma(β): exact, and numpy's
            # float32 gamma sampler is cheaper than its beta (docs/benchmarks.md,
            # "Choosing the personalized model").
            x = generator.standard_gamma(a.astype(np.float32), (rows, len(a)), np.float32)
            y = generator.standard_gamma(b.astype(np.float32), (rows, len(a)), np.float32)
            beta: np.ndarray = x / (x + y)
            return beta
        z = generator.standard_normal((rows, len(a)), dtype=np.float32)
        normal: np.ndarray = a.astype(np.float32) + b.astype(np.float32) * z
        return normal

    def below(self, generator: np.random.Generator, where: np.ndarray, t: float) -> np.ndarray:
        """One draw of each candidate of ``where`` conditioned on being at most ``t``
        (rejection: drawn again while above)."""
        values: np.ndarray = self.sample(generator, 1, where)[0]
        over = np.flatnonzero(values > t)
        while over.size:
            values[over] = self.sample(generator, 1, where[over])[0]
            over = over[values[over] > t]
        return values

    def log_density(self, x: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """``log f(x)`` of each candidate (of ``where``); ``−inf`` off the support."""
        a = self.a if where is None else self.a[where]
        b = self.b if where is None else self.b[where]
        norm = self.log_norm if where is None else self.log_norm[where]
        if self.beta:
            inside = (x > 0.0) & (x < 1.0)
            x = np.where(inside, x, 0.5)
            out = (a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x) + norm
            density: np.ndarray = np.where(inside, out, -np.inf)
            return density
        z: np.ndarray = (x - a) / b
        gaussian: np.ndarray = -0.5 * z * z + norm
        return gaussian

    def tangents(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per candidate, a tangent of ``log f`` touching it at ``u ≥ t``: ``(u, log f(u),
        λ = −(log f)′(u))``. Any ``u`` right of the mode bounds ``f`` (log-concave); this
        one — where a normal with the posterior's mode and spread would make the envelope's
        mass right of ``t`` least — keeps the bound tight near the mode too."""
        a, b = self.a, self.b
        if self.beta:
            total = a + b
            center = np.where(total > 2.0, (a - 1.0) / np.maximum(total - 2.0, 1e-300), 0.5)
            scale = np.sqrt(a * b / (total * total * (total + 1.0)))
        else:
            center, scale = a, b
        z = (t - center) / scale
        u = np.maximum(center + scale * 0.5 * (z + np.sqrt(z * z + 4.0)), t)
        if self.beta:
            u = np.minimum(u, 1.0 - 1e-12)
            rate = (b - 1.0) / (1.0 - u) - (a - 1.0) / u
        else:
            rate = (u - a) / (b * b)
        return u, self.log_density(u), rate

    def masses(self, t: float) -> np.ndarray:
        """Per candidate, the mass right of ``t`` of its envelope ``f(u)·exp(−λ(x − u))``
        (``inf`` where the tangent does not fall: λ ≤ 0) — or, for a Beta(a, 1) (no
        misses yet, the prior's Beta(1, 1) among them), exactly ``P(X > t) = 1 − tᵃ``."""
        u, log_f, rate = self.tangents(t)
        fits = rate > 0.0
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            mass = np.exp(log_f + rate * (u - t)) / np.where(fits, rate, 1.0)
        mass = np.where(fits, mass, np.inf)
        if self.beta:
            power = self.b == 1.0
            mass[power] = -np.expm1(self.a[power] * math.log(t))
        return mass

    def powers(self) -> np.ndarray:
        """The candidates whose law right of ``t`` is drawn exactly by its inverse CDF,
        ``x = (tᵃ + v(1 − tᵃ))^{1/a}`` (Beta(a, 1)), not by the envelope."""
        return (self.b == 1.0) if self.beta else np.zeros(len(self.a), dtype=bool)

    def threshold(self, target: float) -> float:
        """A ``t`` whose band holds about ``target`` candidates: ``Σ min(1, M(t)) ≈ target``
        (bisection; any ``t`` is exact, this one only makes the band the right size)."""
        if self.beta:
            lo, hi = 1e-9, 1.0 - 1e-9
        else:
            lo, hi = float(self.a.min()), float((self.a + 10.0 * self.b).max())
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if float(np.minimum(self.masses(mid), 1.0).sum()) > target:
                lo = mid
            else:
                hi = mid
        return hi


def _chunks(values: np.ndarray) -> Iterator[list[int]]:
    """Indices of ``values``, largest first, in chunks: the next best in doubling chunks
    (a partition each), not the whole array sorted: most walks stop a few positions in."""
    rest = np.arange(len(values))
    negated = -values
    chunk = _HEAD
    while len(rest) > 2 * chunk:
        part = np.argpartition(negated, chunk - 1)[:chunk]
        part = part[np.argsort(negated[part], kind="stable")]
        yield rest[part].tolist()
        keep = np.ones(len(rest), dtype=bool)
        keep[part] = False
        rest, negated = rest[keep], negated[keep]
        chunk *= 2
    yield rest[np.argsort(negated, kind="stable")].tolist()


def _uniform(
    generator: np.random.Generator,
    size: int,
    estimates: Sequence[float],
    picks: list[int],
    powers: list[float],
) -> Scores:
    """Exploration: every candidate drawn uniformly at random, lazily (see _uniform_walk);
    ``picks`` and ``powers`` are the first random numbers it uses (drawn with its block)."""
    draws: dict[int, float] = {}
    return Scores(_uniform_walk(generator, size, draws, picks, powers), draws, estimates, True)


def _uniform_walk(
    generator: np.random.Generator,
    size: int,
    draws: dict[int, float],
    picks: list[int],
    powers: list[float],
) -> Iterator[int]:
    """``size`` uniform draws, best first, made as far as the walk goes: the largest of
    ``n`` uniforms below ``v`` is ``v·U^(1/n)``, and it belongs to a candidate not yet
    drawn, each alike (``picks``: uniform positions, those drawn already skipped) — the
    law of sorting ``size`` uniform draws, at a few draws per position instead of
    ``size``."""
    value = 1.0
    left = size
    half = size // 2
    while left:
        if left < half:  # most are drawn: the rest in a random order
            rest = np.array([p for p in range(size) if p not in draws], dtype=np.intp)
            positions = generator.permutation(rest).tolist()
            for position, power in zip(
                positions, generator.random(len(positions)).tolist(), strict=True
            ):
                value *= power ** (1.0 / left)
                left -= 1
                draws[position] = value
                yield position
            return
        if not picks:
            picks = (generator.random(32) * size).astype(np.intp).tolist()
        if not powers:
            powers = generator.random(32).tolist()
        position = picks.pop()
        if position in draws:
            continue
        value *= powers.pop() ** (1.0 / left)
        left -= 1
        draws[position] = value
        yield position


class FullBlock:
    """Every candidate drawn in every row. Rows are sorted once per block (one vectorised
    sort, not one per decision): whole rows for lists of up to :data:`_SORTED`
    candidates (as cheap as finding a head), else the best :data:`_HEAD` positions of
    every row, and a decision that walks further sorts the rest of its row."""

    __slots__ = (
        "_rows",
        "band",
        "candidates",
        "draws",
        "estimates",
        "explored",
        "heads",
        "posterior",
        "ranked",
    )

    def __init__(
        self,
        candidates: Sequence[Any],
        posterior: Posterior,
        generator: np.random.Generator,
        rows: int,
        exploration: float,
        band: Band | None,
    ) -> None:
        self.candidates = candidates  # held, so the id() key cannot be reused
        #: A band found unfit for this list (kept so that it is not computed again).
        self.band = band
        self.posterior = posterior
        self.estimates = posterior.estimates
        draws = posterior.sample(generator, rows)
        explored = generator.random(rows) < exploration
        if explored.any():
            draws[explored] = generator.random((int(explored.sum()), len(posterior)))
        self.draws = draws
        self.explored: list[bool] = explored.tolist()
        negated = -draws
        #: Whole rows, best first (lists of up to ``_SORTED``); ``None`` for longer ones.
        self.ranked: np.ndarray | None = None
        if draws.shape[1] <= _SORTED:
            # Positions below 256 fit a byte (an eighth of numpy's int64 indices' memory).
            self.ranked = np.argsort(negated, axis=1).astype(np.uint8)
            heads = self.ranked[:, :_HEAD]
        else:
            part = np.argpartition(negated, _HEAD - 1, axis=1)[:, :_HEAD]
            best = np.take_along_axis(negated, part, axis=1)
            heads = np.take_along_axis(part, np.argsort(best, axis=1), axis=1)
        self.heads: list[list[int]] = heads.tolist()
        #: Rows handed out; ``next`` on a count is atomic, so threads never share a row.
        self._rows = itertools.count()

    @property
    def size(self) -> int:
        return len(self.heads)

    def take(self, generator: np.random.Generator) -> Scores | None:
        row = next(self._rows)
        if row >= self.size:
            return None
        draws = self.draws[row]
        head = self.heads[row]
        if len(head) < len(draws):
            order: Iterator[int] = itertools.chain(head, self._tail(row, head, draws))
        else:
            order = iter(head)
        return Scores(order, draws, self.estimates, self.explored[row])

    def _tail(self, row: int, head: list[int], draws: np.ndarray) -> Iterator[int]:
        """The positions past the head, best first (a generator: made when a walk gets
        there)."""
        if self.ranked is not None:
            yield from self.ranked[row, len(head) :].tolist()
            return
        rest = np.ones(len(draws), dtype=bool)
        rest[head] = False
        tail = np.flatnonzero(rest)
        for chunk in _chunks(draws[tail]):
            yield from tail[chunk].tolist()


class Band:
    """The threshold ``t`` of a candidate list's banded blocks and what it implies (kept
    from block to block while the band is wide enough)."""

    __slots__ = (
        "cells",
        "envelope",
        "first",
        "full",
        "offset",
        "power",
        "rate",
        "second",
        "t",
        "table",
        "target",
        "total",
    )

    def __init__(self, posterior: Posterior, target: float, t: float | None = None) -> None:
        self.target = target
        self.t = t = posterior.threshold(target) if t is None else t
        masses = posterior.masses(t)
        fits = masses < _ENVELOPE_MAX
        #: Drawn in full in every row: the candidates the envelope does not fit.
        self.full = np.flatnonzero(~fits)
        #: Drawn by the envelope: the others.
        self.envelope = np.flatnonzero(fits)
        anchor, log_f, rate = posterior.tangents(t)
        envelope = self.envelope
        #: Per candidate of ``envelope``: the tangent's decay λ, and the terms of
        #: ``log f(x) − log e(x) = first·log x + second·log(1 − x) + λx + offset`` (Beta)
        #: or ``first·(x − second)² + λx + offset`` (normal).
        self.rate = rate[envelope]
        a, b = posterior.a[envelope], posterior.b[envelope]
        if posterior.beta:
            self.first, self.second = a - 1.0, b - 1.0
        else:
            self.first, self.second = -0.5 / (b * b), a
        self.offset = (posterior.log_norm[envelope] - log_f[envelope]) - self.rate * anchor[
            envelope
        ]
        #: Per candidate of ``envelope``: drawn by its inverse CDF (``Posterior.powers``).
        self.power = posterior.powers()[self.envelope]
        self.rate[self.power] = 1.0
        # Candidate j of ``envelope`` owns the interval [cells[j], cells[j + 1]) of length
        # −log(1 − M_j): a unit-rate Poisson process has a point in it with probability M_j.
        self.cells = np.concatenate(([0.0], np.cumsum(-np.log1p(-masses[self.envelope]))))
        self.total = float(self.cells[-1])
        #: Per bucket of [0, total) in 8 per cell: the cell its start falls in (a point's
        #: cell is found from there in a step or two, not by a binary search).
        buckets = 8 * len(self.envelope)
        self.table = (
            np.searchsorted(
                self.cells, np.arange(buckets) * (self.total / max(buckets, 1)), side="right"
            )
            - 1
        )


class _BandDraws:
    """A banded row's draws by position: the band's members (values read from the block's
    array when asked for), then the positions a walk past the band drew (``past``)."""

    __slots__ = ("members", "past", "start", "values")

    def __init__(self, members: array.array[int], values: np.ndarray, start: int) -> None:
        self.members = members
        self.values = values
        self.start = start
        self.past: dict[int, float] = {}

    def __getitem__(self, position: int) -> float:
        found = self.past.get(position)
        if found is not None:
            return found
        # ``item``: a Python float straight from the array (no numpy scalar in between).
        value: float = self.values.item(self.start + self.members.index(position))
        return value


class BandedBlock:
    """Per row, only the band (draws above ``t``) is drawn and sorted; see the module."""

    __slots__ = (
        "_explore",
        "_rows",
        "_walked_past",
        "band",
        "candidates",
        "estimates",
        "explored",
        "full_draws",
        "members",
        "posterior",
        "ranked",
        "starts",
        "values",
    )

    def __init__(
        self,
        candidates: Sequence[Any],
        posterior: Posterior,
        generator: np.random.Generator,
        rows: int,
        exploration: float,
        band: Band,
    ) -> None:
        self.candidates = candidates
        self.posterior = posterior
        self.estimates = posterior.estimates
        self.band = band
        t, envelope = band.t, band.envelope
        explored = generator.random(rows) < exploration
        self.explored: list[bool] = explored.tolist()
        #: Per row, its index among the ranked (not exploring) rows: only those are drawn
        #: in bands (an exploring row ranks at random and would not read its band).
        self.ranked: list[int] = (np.cumsum(~explored) - 1).tolist()
        explorers = int(explored.sum())
        rows = rows - explorers
        # Proposals: the points of a unit-rate Poisson process over the rows' cells laid
        # end to end (a candidate is proposed in a row when its cell holds a point), in
        # order, as the running sum of exponential gaps.
        length = band.total * rows
        gaps = generator.standard_exponential(int(length + 6.0 * math.sqrt(length) + 16.0))
        points = np.cumsum(gaps)
        while points[-1] < length:
            more = generator.standard_exponential(len(points) // 4 + 16)
            points = np.concatenate((points, points[-1] + np.cumsum(more)))
        points = points[: np.searchsorted(points, length)]
        count = len(envelope)
        if not count or band.total <= 0.0:
            points = points[:0]
        proposed_rows = np.minimum((points * (1.0 / band.total)).astype(np.intp), max(rows - 1, 0))
        within = np.maximum(points - proposed_rows * band.total, 0.0)
        buckets = len(band.table)
        hit = band.table[np.minimum((within * (buckets / band.total)).astype(np.intp), buckets - 1)]
        bounds = np.concatenate((band.cells, [np.inf]))
        for _ in range(2):
            hit += bounds[hit + 1] <= within
        late = np.flatnonzero(bounds[hit + 1] <= within)
        if late.size:
            hit[late] = np.searchsorted(band.cells, within[late], side="right") - 1
        np.minimum(hit, max(count - 1, 0), out=hit)  # rounding at the very end
        flat = proposed_rows * len(envelope) + hit
        if len(flat):  # one proposal per cell however many points it holds
            fresh = np.concatenate(([True], flat[1:] != flat[:-1]))
            proposed_rows, hit = proposed_rows[fresh], hit[fresh]
        proposed = envelope[hit]
        # Values: t + Exp(λ), kept with probability f(x) / e(x), i.e. when an Exp(1)
        # draw exceeds log e(x) − log f(x).
        lam = band.rate[hit]
        gaps = generator.standard_exponential(len(proposed))
        x = t + gaps / lam
        with np.errstate(divide="ignore", invalid="ignore"):  # x ≥ 1 (Beta): rejected
            if posterior.beta:
                log_keep = band.first[hit] * np.log(x) + band.second[hit] * np.log1p(-x)
            else:
                log_keep = band.first[hit] * np.square(x - band.second[hit])
            log_keep += lam * x + band.offset[hit]
        power = band.power[hit]
        if power.any():  # Beta(a, 1): exact, by the inverse CDF of a uniform
            a = posterior.a[proposed[power]]
            floor = np.exp(a * math.log(t))
            x[power] = (floor - np.expm1(-gaps[power]) * (1.0 - floor)) ** (1.0 / a)
            log_keep[power] = 0.0
        kept = log_keep + generator.standard_exponential(len(proposed)) >= 0.0
        full_draws = posterior.sample(generator, rows, band.full)
        self.full_draws = full_draws
        above_rows, above = np.nonzero(full_draws > t)
        member_rows = np.concatenate((proposed_rows[kept], above_rows))
        members = np.concatenate((proposed[kept], band.full[above]))
        values = np.concatenate((x[kept], full_draws[above_rows, above]))
        # Row by row, best draw first: one sort of ``row + 1 / (1 + value − t)`` (every
        # member's value is above t; the fraction falls as the value grows).
        order = np.argsort(member_rows + 1.0 / (1.0 + (values - t)))
        self.starts: list[int] = np.searchsorted(member_rows[order], np.arange(rows + 1)).tolist()
        # Kept compact: the members as a C array of positions (a decision slices its row
        # out in one copy and iterates it, much cheaper than a numpy slice's ``tolist``
        # where the block's memory is cold: docs/benchmarks.md), the values as numpy's (a
        # decision reads those of the few positions it ranks; most walks stop well inside
        # the band).
        self.members = array.array("I", members[order].astype(np.uintc).tobytes())
        self.values: np.ndarray = values[order]
        #: Per exploring row, the first random numbers of its walk, drawn in one go.
        self._explore: dict[int, tuple[list[int], list[float]]] = {}
        count = explorers
        if count:
            # Uniform positions as ⌊U·n⌋ (numpy's bounded integers cost several times more;
            # the bias is below n / 2⁵³, as in ``ranking.draw``).
            uniforms = generator.random((2, count, 32))
            picks = (uniforms[0] * len(posterior)).astype(np.intp).tolist()
            powers = uniforms[1].tolist()
            self._explore = dict(
                zip(np.flatnonzero(explored).tolist(), zip(picks, powers, strict=True), strict=True)
            )
        self._walked_past = 0
        self._rows = itertools.count()

    @property
    def size(self) -> int:
        return len(self.explored)

    @property
    def exhausted(self) -> bool:
        """Whether walks ran past the band too often (the next band should be wider)."""
        ranked_rows = self.ranked[-1] + 1 if self.ranked else 0
        return self._walked_past > _EXHAUSTED * ranked_rows

    def take(self, generator: np.random.Generator) -> Scores | None:
        row = next(self._rows)
        if row >= self.size:
            return None
        if self.explored[row]:
            picks, powers = self._explore.get(row, ([], []))
            return _uniform(generator, len(self.posterior), self.estimates, picks, powers)
        ranked = self.ranked[row]
        start, stop = self.starts[ranked], self.starts[ranked + 1]
        members = self.members[start:stop]
        draws = _BandDraws(members, self.values, start)
        order = itertools.chain(members, self._past(ranked, members, draws.past, generator))
        return Scores(order, draws, self.estimates, False)

    def _past(
        self,
        ranked: int,
        members: array.array[int],
        draws: dict[int, float],
        generator: np.random.Generator,
    ) -> Iterator[int]:
        """Past the band of ranked row ``ranked`` (a generator: runs only when a walk gets
        there): the other candidates, each drawn conditioned on being ≤ t."""
        self._walked_past += 1
        t = self.band.t
        rest = np.ones(len(self.posterior), dtype=bool)
        rest[members] = False
        full_values = self.full_draws[ranked]
        below = full_values <= t
        rest[self.band.full] = False
        envelope = np.flatnonzero(rest)
        positions = np.concatenate((envelope, self.band.full[below]))
        values = np.concatenate((self.posterior.below(generator, envelope, t), full_values[below]))
        for chunk in _chunks(values):
            for position, value in zip(
                positions[chunk].tolist(), values[chunk].tolist(), strict=True
            ):
                draws[position] = value
                yield position
