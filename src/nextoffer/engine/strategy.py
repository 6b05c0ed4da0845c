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

import math
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from nextoffer.engine.sampling import Band, BandedBlock, FullBlock, Posterior, Scores

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
    features = strategy.features
    if not features:
        return (0,)
    root = profile if profile.__class__ is dict else dict(profile)
    values = [feature.reader(root, context) for feature in features]
    # Memoised by the values read (and their types: True and 1 are different categories);
    # values that cannot be hashed (lists), and long texts, are worked out each time.
    key: tuple[Any, ...] | None = None
    found = None
    if sum(len(value) for value in values if value.__class__ is str) <= MEMO_TEXTS:
        try:
            key = (strategy, *values, *map(type, values))
            found = _ACTIVE.get(key)
        except TypeError:
            key = None
    if found is None:
        found = tuple(
            sorted(
                {0}
                | {
                    _slot(feature.source, _category(value))
                    for feature, value in zip(features, values, strict=True)
                }
            )
        )
        if key is not None:
            if len(_ACTIVE) >= 65_536:
                _ACTIVE.clear()
            _ACTIVE[key] = found
    return found


#: Feature slots by (strategy, values read, their types): a pure function, memoised.
_ACTIVE: dict[tuple[Any, ...], tuple[int, ...]] = {}
#: Values are memoised only while short: a request's context data is the caller's, and
#: 65,536 entries of a 1 MB value each would hold 64 GB. A category longer than
#: ``MEMO_TEXT`` is not kept by :func:`_slot`, values whose texts pass ``MEMO_TEXTS`` in
#: all are not kept in ``_ACTIVE`` (at most 16 MB and 64 MB of text); they cost their
#: CRC-32 (about 1 µs per KB) each time.
MEMO_TEXT = 256
MEMO_TEXTS = 1024


def _slot(source: str, category: str) -> int:
    """The hashed slot of one (feature, value) pair (a pure function, memoised)."""
    if len(category) > MEMO_TEXT:
        return 1 + zlib.crc32(f"{source}={category}".encode()) % SLOTS
    return _short_slot(source, category)


@lru_cache(maxsize=65_536)
def _short_slot(source: str, category: str) -> int:
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

    Draws are made in blocks (``sampling.FullBlock``, ``sampling.BandedBlock``), each
    for one candidate list (and feature slots); a new ``Learned`` (new feedback) starts
    new blocks.
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
        self._blocks: dict[tuple[int, tuple[int, ...]], FullBlock | BandedBlock] = {}

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Each candidate's row (``-1``: no feedback yet)."""
        index = self.index
        return np.fromiter((index.get(i, -1) for i in ids), dtype=np.intp, count=len(ids))


def learn(
    strategy_type: StrategyType,
    cells: Mapping[str, Mapping[tuple[int, int], float]],
    *,
    previous: Learned | None = None,
    changed: Collection[str] | None = None,
) -> Learned:
    """The posterior of every offer from its statistics (offer → (row, col) → sum).

    With ``previous`` (what was learned before) and ``changed`` (the offers whose cells
    moved since), a personalized posterior is recomputed only for the changed offers and
    copied for the others: a posterior is a function of its offer's cells alone, and
    feedback names a few offers at a time, where a strategy may rank thousands (each an
    inverse of a D × D matrix, and its cells walked in Python).
    """
    ids = sorted(cells)
    index = {offer_id: row for row, offer_id in enumerate(ids)}
    impressions = np.array([cells[i].get((0, 0), 0.0) for i in ids], dtype=float)
    clicks = np.array([cells[i].get((0, REWARD), 0.0) for i in ids], dtype=float)
    rate = (1.0 + float(np.minimum(clicks, impressions).sum())) / (2.0 + float(impressions.sum()))
    noise = math.sqrt(rate * (1.0 - rate))
    if strategy_type is StrategyType.AUTO:
        return Learned(index, impressions, clicks, noise=noise)
    means = np.zeros((len(ids), DIMENSION))
    covariances = np.empty((len(ids), DIMENSION, DIMENSION))
    # Rows of ``previous`` that still hold (its offers whose cells did not change) are
    # copied in bulk; the other offers' posteriors are computed.
    fresh: list[int] = list(range(len(ids)))
    if previous is not None and changed is not None:
        old_means, old_covariances = previous.means, previous.covariances
        if old_means is not None and old_covariances is not None:
            found = previous.rows(ids)
            keep = found >= 0
            keep[[k for k, offer_id in enumerate(ids) if offer_id in changed]] = False
            means[keep] = old_means[found[keep]]
            covariances[keep] = old_covariances[found[keep]]
            fresh = np.flatnonzero(~keep).tolist()
    # In chunks: a chunk's precisions and inverses are temporaries as large as its rows of
    # ``covariances`` (34 KB an offer), which must not double a large strategy's memory.
    for start in range(0, len(fresh), _CHUNK):
        chunk = fresh[start : start + _CHUNK]
        precisions = np.zeros((len(chunk), DIMENSION, DIMENSION))
        rewards = np.zeros((len(chunk), DIMENSION))
        for f, k in enumerate(chunk):
            _statistics(cells[ids[k]], precisions[f], rewards[f])
        precisions += np.eye(DIMENSION) * PRIOR_PRECISION
        inverses = np.linalg.inv(precisions)
        covariances[chunk] = inverses
        means[chunk] = np.einsum("kij,kj->ki", inverses, rewards)
    return Learned(index, impressions, clicks, means=means, covariances=covariances, noise=noise)


#: Offers whose posteriors are computed together (one batched inverse; 4.3 MB of
#: temporaries).
_CHUNK = 64


def _statistics(
    cells: Mapping[tuple[int, int], float], precision: np.ndarray, rewards: np.ndarray
) -> None:
    """Add one offer's cells into ``A`` (both triangles) and ``b``, in bulk."""
    if not cells:
        return
    keys = np.array(list(cells), dtype=np.intp).reshape(-1, 2)
    values = np.fromiter(cells.values(), dtype=float, count=len(cells))
    rows, cols = keys[:, 0], keys[:, 1]
    reward = cols == REWARD
    np.add.at(rewards, rows[reward], values[reward])
    rows, cols, values = rows[~reward], cols[~reward], values[~reward]
    np.add.at(precision, (rows, cols), values)
    lower = rows != cols
    np.add.at(precision, (cols[lower], rows[lower]), values[lower])


#: Draws per candidate kept in one block at most (fewer for long candidate lists: ≤ 64 K
#: floats). A block starts at 8 rows and doubles each time its key is drawn for again, so
#: feature combinations seen once cost one small block.
BLOCK_ROWS = 256
#: Blocks kept per ``Learned`` (candidate lists × feature slots); all dropped when full.
MAX_BLOCKS = 256
#: Candidate lists at least this long are drawn in bands (``sampling.BandedBlock``) once
#: their key has been drawn for :data:`BANDED_AFTER` times; shorter ones in full.
BANDED_MIN = 256
BANDED_AFTER = 24
#: The band's expected size at first (widened by half while walks run past it).
BAND_TARGET = 24


def score(
    strategy: Strategy,
    learned: Learned,
    candidates: Sequence[Any],
    active: tuple[int, ...],
    generator: np.random.Generator,
) -> Scores:
    """One posterior draw for every candidate (or, when exploring, a uniform draw), made
    lazily: ``order`` walks the candidates best draw first, drawing as far as it goes.

    ``candidates`` is the catalog's candidate list (it keys the blocks of draws), each with
    an ``at_id``. Ineligible candidates may be among them: draws are
    independent, so ranking by the draw and then skipping the ineligible ranks the
    eligible exactly as drawing for them alone would (the engine checks eligibility
    lazily, in draw order).
    """
    key = (id(candidates), active if strategy.type is StrategyType.PERSONALIZED else ())
    block = learned._blocks.get(key)
    if block is not None and block.candidates is not candidates:
        block = None
    found = block.take(generator) if block is not None else None
    if found is None:
        if len(learned._blocks) >= MAX_BLOCKS:
            learned._blocks.clear()
        block = _next_block(strategy, learned, candidates, active, generator, block)
        learned._blocks[key] = block
        found = block.take(generator)
        assert found is not None
    return found


def _next_block(
    strategy: Strategy,
    learned: Learned,
    candidates: Sequence[Any],
    active: tuple[int, ...],
    generator: np.random.Generator,
    previous: FullBlock | BandedBlock | None,
) -> FullBlock | BandedBlock:
    k = len(candidates)
    size = 8 if previous is None else 2 * previous.size
    posterior = (
        _posterior(strategy, learned, candidates, active)
        if previous is None
        else previous.posterior
    )
    exploration = strategy.exploration
    if k >= BANDED_MIN and size > BANDED_AFTER:
        rows = min(size, BLOCK_ROWS)
        band = previous.band if previous is not None else None
        if isinstance(previous, BandedBlock) and previous.exhausted:
            band = Band(posterior, 1.5 * previous.band.target)
        elif band is None:
            band = Band(posterior, BAND_TARGET)
        # Banded while the band is a small part of the list and few are drawn in full.
        if band.target <= k / 4 and len(band.full) <= k / 4:
            return BandedBlock(candidates, posterior, generator, rows, exploration, band)
        rows = max(1, min(size, BLOCK_ROWS, 65_536 // max(k, 1)))
        return FullBlock(candidates, posterior, generator, rows, exploration, band)
    rows = max(1, min(size, BLOCK_ROWS, 65_536 // max(k, 1)))
    return FullBlock(candidates, posterior, generator, rows, exploration, None)


def _posterior(
    strategy: Strategy, learned: Learned, candidates: Sequence[Any], active: tuple[int, ...]
) -> Posterior:
    """Each candidate's posterior of its score (the prior's where it has no feedback)."""
    k = len(candidates)
    found = learned.rows([c.at_id for c in candidates])
    seen = found >= 0
    taken = found[seen]
    if strategy.type is StrategyType.AUTO:
        alpha = np.ones(k)
        beta = np.ones(k)
        clicks = learned.clicks[taken]
        alpha[seen] += clicks
        beta[seen] += np.maximum(learned.impressions[taken] - clicks, 0.0)
        return Posterior(True, alpha, beta)
    index = np.asarray(active, dtype=np.intp)
    means = np.zeros(k)
    variances = np.full(k, len(active) / PRIOR_PRECISION)
    if learned.means is not None and learned.covariances is not None and seen.any():
        means[seen] = learned.means[taken[:, None], index[None, :]].sum(axis=1)
        block = learned.covariances[
            taken[:, None, None], index[None, :, None], index[None, None, :]
        ]
        variances[seen] = block.sum(axis=(1, 2))
    spread = learned.noise * np.sqrt(np.maximum(variances, 1e-18))
    return Posterior(False, means, spread)
