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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

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
        key = f"{feature.source}={_category(feature.read(profile, context))}"
        active.add(1 + zlib.crc32(key.encode("utf-8")) % SLOTS)
    return tuple(sorted(active))


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
    the covariance over σ², 34 KB per offer). Candidates are mapped to rows once per
    candidate list (the catalog's lists are immutable) and kept in ``_rows``.
    """

    __slots__ = ("_rows", "clicks", "covariances", "impressions", "index", "means", "noise")

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
        self._rows: dict[int, tuple[Sequence[Any], np.ndarray]] = {}

    def rows(self, candidates: Sequence[Any], ids: Sequence[str]) -> np.ndarray:
        """Each candidate's row (``-1``: no feedback yet), cached per candidate list."""
        found = self._rows.get(id(candidates))
        if found is not None and found[0] is candidates:
            return found[1]
        index = self.index
        rows = np.fromiter((index.get(i, -1) for i in ids), dtype=np.intp, count=len(ids))
        if len(self._rows) < 4096:
            self._rows[id(candidates)] = (candidates, rows)
        return rows


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


_NOTHING = Learned({}, np.zeros(0), np.zeros(0))


@dataclass(frozen=True, slots=True)
class Scores:
    """One decision's view of the candidates: a draw and an estimate each, in order."""

    draws: np.ndarray
    #: The posterior mean reward (auto: the Beta mean; personalized: ``x·μ``).
    estimates: np.ndarray
    #: True when this decision served at random (personalized exploration).
    explored: bool


def score(
    strategy: Strategy,
    learned: Learned | None,
    candidates: Sequence[Any],
    ids: Sequence[str],
    active: Sequence[int],
    generator: np.random.Generator,
) -> Scores:
    """Sample every candidate's posterior (or, when exploring, a uniform draw).

    ``candidates`` is the catalog's candidate list (a cache key) and ``ids`` their
    ``@id``s. Ineligible candidates may be among them: draws are independent, so ranking
    by the draw and then skipping the ineligible ranks the eligible exactly as drawing for
    them alone would (the engine checks eligibility lazily, in draw order).
    """
    learned = learned or _NOTHING
    rows = learned.rows(candidates, ids) if learned.index else np.full(len(ids), -1)
    seen = rows >= 0
    if strategy.type is StrategyType.AUTO:
        alpha = np.ones(len(ids))
        beta = np.ones(len(ids))
        if learned.index:
            taken = rows[seen]
            clicks = learned.clicks[taken]
            alpha[seen] += clicks
            beta[seen] += np.maximum(learned.impressions[taken] - clicks, 0.0)
        return Scores(generator.beta(alpha, beta), alpha / (alpha + beta), False)
    index = np.asarray(active, dtype=np.intp)
    means = np.zeros(len(ids))
    variances = np.full(len(ids), len(active) / PRIOR_PRECISION)
    if learned.means is not None and learned.covariances is not None and seen.any():
        taken = rows[seen]
        # Gather only the active rows and columns (a copy of whole matrices per decision
        # would cost more than the rest of it).
        means[seen] = learned.means[taken[:, None], index[None, :]].sum(axis=1)
        block = learned.covariances[
            taken[:, None, None], index[None, :, None], index[None, None, :]
        ]
        variances[seen] = block.sum(axis=(1, 2))
    if strategy.exploration > 0.0 and generator.random() < strategy.exploration:
        return Scores(generator.random(len(ids)), means, True)
    spread = learned.noise * np.sqrt(np.maximum(variances, 0.0))
    return Scores(generator.normal(means, spread), means, False)
