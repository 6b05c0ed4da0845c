"""Ranking strategies: what they learned, and how they score candidates (decisioning-api.md §4.4).

Both kinds of strategy are Bayesian models sampled once per decision (Thompson sampling),
so a decision explores exactly as much as the model is unsure, with no minimum of data
before it starts:

* **auto-optimization** — per offer, Beta(1 + clicks, 1 + impressions − clicks); every
  eligible offer's posterior is sampled and the offers are ranked by the draw.
* **personalized-optimization** — per offer, a Bayesian linear regression of the reward
  on the request's features (Gaussian prior N(0, I/λ), the noise scale of a Bernoulli
  reward at the strategy's mean rate): the posterior of ``x·θ`` is sampled for the
  request's feature vector ``x``. A share ``explorationRate`` of decisions (default 0.1)
  ranks the eligible offers uniformly at random instead.

Features are categorical: each (feature, value) pair is one-hot, hashed into
:data:`SLOTS` slots (slot 0 is the bias, always on). The model's sufficient statistics —
per offer, ``A = Σ x xᵀ`` (one per impression) and ``b = Σ r x`` (one per click) — are
sums, so feedback from every worker and node adds up exactly and in any order; the
service stores them as cells ``(row, col)`` (``col = -1`` for ``b``). Auto-optimization
is the case ``x = (1)``: ``A[0,0]`` counts impressions and ``b[0]`` clicks.

Pure: the learned state and a numpy ``Generator`` are parameters.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from nextoffer.pql import FeaturePath

#: Hashed one-hot slots for feature values; the model's dimension is one more (the bias).
SLOTS = 64
DIMENSION = SLOTS + 1
#: The prior's precision λ: θ ~ N(0, I/λ).
PRIOR_PRECISION = 1.0
#: The column of a cell that holds ``b`` (the reward sums) rather than ``A``.
REWARD = -1


class StrategyType(Enum):
    """``xdm:strategyType``."""

    AUTO = "auto-optimization"
    PERSONALIZED = "personalized-optimization"


@dataclass(frozen=True, slots=True, eq=False)
class Strategy:
    """A ranking strategy of the catalog."""

    at_id: str
    instance_id: str
    etag: int
    body: Mapping[str, Any]
    type: StrategyType
    #: ``clicks`` (``decisioning.propositionInteract``) or a custom conversion event type.
    goal: str
    #: Personalized only: what the model reads (``pql.feature`` paths), in body order.
    features: tuple[FeaturePath, ...] = ()
    #: Personalized only: the share of decisions served at random among the eligible.
    exploration: float = 0.0


def slots(
    strategy: Strategy, profile: Mapping[str, Any], context: Mapping[str, Any]
) -> tuple[int, ...]:
    """The request's active feature slots, sorted: the bias (0) and one per feature."""
    if not strategy.features:
        return (0,)
    active = {0}
    for feature in strategy.features:
        active.add(_slot(feature.source, _category(feature.read(profile, context))))
    return tuple(sorted(active))


@lru_cache(maxsize=65_536)
def _slot(source: str, category: str) -> int:
    """The hashed slot of one (feature, value) pair (a pure function, memoised)."""
    return 1 + zlib.crc32(f"{source}={category}".encode()) % SLOTS


def _category(value: Any) -> str:
    """A feature value as a category name (numbers by their text, ``null`` when absent)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ",".join(sorted(_category(v) for v in value)) + "]"
    return str(value)


def increments(
    slots_: Sequence[int], *, impression: bool, reward: bool
) -> dict[tuple[int, int], float]:
    """The cells one feedback event adds to an offer's statistics: an impression adds
    ``x xᵀ`` (upper triangle), a reward adds ``x`` to ``b``."""
    cells: dict[tuple[int, int], float] = {}
    if impression:
        for i, row in enumerate(slots_):
            for col in slots_[i:]:
                cells[(row, col)] = 1.0
    if reward:
        for row in slots_:
            cells[(row, REWARD)] = 1.0
    return cells


class Learned:
    """What one strategy has learned, as arrays over the offers that have feedback.

    Auto-optimization keeps impressions and clicks per offer; personalized optimization
    the posterior mean of θ (``means``, K × D) and ``A⁻¹`` (``covariances``, K × D × D;
    the covariance over σ², 34 KB per offer).

    Draws are made in blocks (:class:`_Block`): numpy's samplers cost ~6 µs per call but
    ~0.08 µs per Beta draw in bulk, so a block holds a few hundred independent draws for
    every candidate of one candidate list (and feature slots), and each decision takes
    the next row. The rows are independent draws from the posterior, so each decision
    is an exact Thompson sample; a new ``Learned`` (new feedback) starts new blocks.
    """

    __slots__ = (
        "_blocks",
        "clicks",
        "covariances",
        "impressions",
        "index",
        "means",
        "noise",
    )

    def __init__(
        self,
        index: Mapping[str, int],
        impressions: np.ndarray,
        clicks: np.ndarray,
        *,
        means: np.ndarray | None = None,
        covariances: np.ndarray | None = None,
        noise: float = 0.5,
    ) -> None:
        self.index = index
        self.impressions = impressions
        self.clicks = clicks
        self.means = means
        self.covariances = covariances
        #: σ, the reward's standard deviation (personalized).
        self.noise = noise
        self._blocks: dict[tuple[int, tuple[int, ...]], _Block] = {}

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Each candidate's row (``-1``: no feedback yet)."""
        index = self.index
        return np.fromiter((index.get(i, -1) for i in ids), dtype=np.intp, count=len(ids))


def learn(
    strategy_type: StrategyType, cells: Mapping[str, Mapping[tuple[int, int], float]]
) -> Learned:
    """The posterior of every offer from its statistics (offer → (row, col) → sum)."""
    ids = sorted(cells)
    index = {offer_id: row for row, offer_id in enumerate(ids)}
    impressions = np.array([cells[i].get((0, 0), 0.0) for i in ids], dtype=float)
    clicks = np.array([cells[i].get((0, REWARD), 0.0) for i in ids], dtype=float)
    rate = (1.0 + float(np.minimum(clicks, impressions).sum())) / (2.0 + float(impressions.sum()))
    noise = math.sqrt(rate * (1.0 - rate))
    if strategy_type is StrategyType.AUTO:
        return Learned(index, impressions, clicks, noise=noise)
    means = np.zeros((len(ids), DIMENSION))
    covariances = np.zeros((len(ids), DIMENSION, DIMENSION))
    for k, offer_id in enumerate(ids):
        precision = np.eye(DIMENSION) * PRIOR_PRECISION
        rewards = np.zeros(DIMENSION)
        for (row, col), value in cells[offer_id].items():
            if col == REWARD:
                rewards[row] = value
            else:
                precision[row, col] += value
                if row != col:
                    precision[col, row] += value
        covariances[k] = np.linalg.inv(precision)
        means[k] = covariances[k] @ rewards
    return Learned(index, impressions, clicks, means=means, covariances=covariances, noise=noise)


#: Draws per candidate kept in one block at most (fewer for long candidate lists: ≤ 64 K
#: floats). A block starts at 8 rows and doubles each time its key is drawn for again, so
#: feature combinations seen once cost one small block.
BLOCK_ROWS = 256
#: Blocks kept per ``Learned`` (candidate lists × feature slots); all dropped when full.
MAX_BLOCKS = 256


class Scores(NamedTuple):
    """One decision's view of the candidates."""

    #: Candidate positions, best draw first (sorted as far as the walk goes).
    order: Iterable[int]
    #: Per candidate: the draw it is ranked by.
    draws: np.ndarray
    #: The posterior mean reward (auto: the Beta mean; personalized: ``x·μ``).
    estimates: np.ndarray
    #: True when this decision served at random (personalized exploration).
    explored: bool


#: Positions per row sorted when a block is drawn; a walk past them sorts the rest.
_HEAD = 16


class _Block:
    """Pre-drawn posterior samples for one candidate list (and feature slots). The best
    :data:`_HEAD` positions of every row are found and sorted once per block (one
    vectorised partition, not one sort per decision); a decision that walks further
    sorts the rest of its row."""

    __slots__ = ("_rows", "candidates", "draws", "estimates", "explored", "heads", "size")

    def __init__(
        self,
        candidates: Sequence[Any],
        draws: np.ndarray,
        estimates: np.ndarray,
        explored: np.ndarray,
    ) -> None:
        self.candidates = candidates  # held, so the id() key cannot be reused
        self.size = len(draws)
        self.draws = draws
        self.estimates = estimates
        self.explored: list[bool] = explored.tolist()
        negated = -draws
        width = draws.shape[1]
        if width > _HEAD:
            part = np.argpartition(negated, _HEAD - 1, axis=1)[:, :_HEAD]
            best = np.take_along_axis(negated, part, axis=1)
            heads = np.take_along_axis(part, np.argsort(best, axis=1), axis=1)
        else:
            heads = np.argsort(negated, axis=1)
        self.heads: list[list[int]] = heads.tolist()
        #: Rows handed out; ``next`` on a count is atomic, so threads never share a row.
        self._rows = itertools.count()

    def take(self) -> Scores | None:
        row = next(self._rows)
        if row >= self.size:
            return None
        draws = self.draws[row]
        return Scores(self._walk(row, draws), draws, self.estimates, self.explored[row])

    def _walk(self, row: int, draws: np.ndarray) -> Iterator[int]:
        head = self.heads[row]
        yield from head
        if len(head) >= len(draws):
            return
        rest = np.ones(len(draws), dtype=bool)
        rest[head] = False
        tail = np.flatnonzero(rest)
        values = -draws[tail]
        # Past the head, the next best positions in doubling chunks (a partition each),
        # not the whole rest sorted: most walks stop a few positions in.
        chunk = _HEAD
        while len(tail) > 2 * chunk:
            part = np.argpartition(values, chunk - 1)[:chunk]
            part = part[np.argsort(values[part], kind="stable")]
            yield from tail[part].tolist()
            keep = np.ones(len(tail), dtype=bool)
            keep[part] = False
            tail, values = tail[keep], values[keep]
            chunk *= 2
        yield from tail[np.argsort(values, kind="stable")].tolist()


def score(
    strategy: Strategy,
    learned: Learned,
    candidates: Sequence[Any],
    active: tuple[int, ...],
    generator: np.random.Generator,
) -> Scores:
    """One posterior draw for every candidate (or, when exploring, a uniform draw).

    ``candidates`` is the catalog's candidate list (it keys the blocks of draws), each with
    an ``at_id``. Ineligible candidates may be among them: draws are
    independent, so ranking by the draw and then skipping the ineligible ranks the
    eligible exactly as drawing for them alone would (the engine checks eligibility
    lazily, in draw order).
    """
    key = (id(candidates), active if strategy.type is StrategyType.PERSONALIZED else ())
    block = learned._blocks.get(key)
    found = block.take() if block is not None and block.candidates is candidates else None
    if found is None:
        if len(learned._blocks) >= MAX_BLOCKS:
            learned._blocks.clear()
        size = 8 if block is None or block.candidates is not candidates else 2 * block.size
        block = _draw(strategy, learned, candidates, active, generator, size)
        learned._blocks[key] = block
        found = block.take()
        assert found is not None
    return found


def _draw(
    strategy: Strategy,
    learned: Learned,
    candidates: Sequence[Any],
    active: tuple[int, ...],
    generator: np.random.Generator,
    size: int,
) -> _Block:
    k = len(candidates)
    rows = max(1, min(size, BLOCK_ROWS, 65_536 // max(k, 1)))
    found = learned.rows([c.at_id for c in candidates])
    seen = found >= 0
    taken = found[seen]
    if strategy.type is StrategyType.AUTO:
        alpha = np.ones(k)
        beta = np.ones(k)
        clicks = learned.clicks[taken]
        alpha[seen] += clicks
        beta[seen] += np.maximum(learned.impressions[taken] - clicks, 0.0)
        # Beta(α, β) as X / (X + Y), X ~ Gamma(α), Y ~ Gamma(β): exact, and numpy's
        # float32 gamma sampler is ~3× faster than its beta (ranking needs no more digits).
        x = generator.standard_gamma(alpha.astype(np.float32), size=(rows, k), dtype=np.float32)
        y = generator.standard_gamma(beta.astype(np.float32), size=(rows, k), dtype=np.float32)
        draws = x / (x + y)
        return _Block(candidates, draws, alpha / (alpha + beta), np.zeros(rows, dtype=bool))
    index = np.asarray(active, dtype=np.intp)
    means = np.zeros(k)
    variances = np.full(k, len(active) / PRIOR_PRECISION)
    if learned.means is not None and learned.covariances is not None and seen.any():
        means[seen] = learned.means[taken[:, None], index[None, :]].sum(axis=1)
        block = learned.covariances[
            taken[:, None, None], index[None, :, None], index[None, None, :]
        ]
        variances[seen] = block.sum(axis=(1, 2))
    spread = learned.noise * np.sqrt(np.maximum(variances, 0.0))
    draws = means + spread * generator.standard_normal((rows, k), dtype=np.float32)
    explored = generator.random(rows) < strategy.exploration
    if explored.any():
        draws[explored] = generator.random((int(explored.sum()), k))
    return _Block(candidates, draws, means, explored)
