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


@dataclass(frozen=True, slots=True, eq=False)
class Arm:
    """One offer's posterior under one strategy."""

    impressions: float
    clicks: float
    #: Personalized: the posterior mean of θ and ``A⁻¹`` (the covariance over σ²).
    mean: np.ndarray | None = None
    covariance: np.ndarray | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Learned:
    """What one strategy has learned: an arm per offer that has feedback."""

    arms: Mapping[str, Arm]
    #: σ, the reward's standard deviation (personalized).
    noise: float = 0.5


def learn(
    strategy_type: StrategyType, cells: Mapping[str, Mapping[tuple[int, int], float]]
) -> Learned:
    """The posterior of every offer from its statistics (offer → (row, col) → sum)."""
    arms: dict[str, Arm] = {}
    total_n = total_c = 0.0
    for offer_id, offer_cells in cells.items():
        n = offer_cells.get((0, 0), 0.0)
        c = offer_cells.get((0, REWARD), 0.0)
        total_n += n
        total_c += min(c, n)
        if strategy_type is StrategyType.AUTO:
            arms[offer_id] = Arm(n, c)
            continue
        precision = np.eye(DIMENSION) * PRIOR_PRECISION
        rewards = np.zeros(DIMENSION)
        for (row, col), value in offer_cells.items():
            if col == REWARD:
                rewards[row] = value
            else:
                precision[row, col] += value
                if row != col:
                    precision[col, row] += value
        covariance = np.linalg.inv(precision)
        arms[offer_id] = Arm(n, c, covariance @ rewards, covariance)
    rate = (1.0 + total_c) / (2.0 + total_n)
    return Learned(arms, math.sqrt(rate * (1.0 - rate)))


_NOTHING = Learned({})


@dataclass(frozen=True, slots=True)
class Scores:
    """One decision's view of the candidates: a draw and an estimate each, in order."""

    draws: tuple[float, ...]
    #: The posterior mean reward (auto: the Beta mean; personalized: ``x·μ``).
    estimates: tuple[float, ...]
    #: True when this decision served at random (personalized exploration).
    explored: bool


def score(
    strategy: Strategy,
    learned: Learned | None,
    offer_ids: Sequence[str],
    active: Sequence[int],
    generator: np.random.Generator,
) -> Scores:
    """Sample every candidate's posterior (or, when exploring, a uniform draw)."""
    learned = learned or _NOTHING
    arms = [learned.arms.get(offer_id) for offer_id in offer_ids]
    if strategy.type is StrategyType.AUTO:
        alpha = np.array([1.0 + (a.clicks if a else 0.0) for a in arms])
        beta = np.array([1.0 + (max(a.impressions - a.clicks, 0.0) if a else 0.0) for a in arms])
        draws = generator.beta(alpha, beta)
        return Scores(tuple(draws.tolist()), tuple((alpha / (alpha + beta)).tolist()), False)
    index = np.asarray(active, dtype=np.intp)
    prior_variance = len(active) / PRIOR_PRECISION
    means = np.zeros(len(arms))
    variances = np.full(len(arms), prior_variance)
    for k, arm in enumerate(arms):
        if arm is not None and arm.mean is not None and arm.covariance is not None:
            means[k] = arm.mean[index].sum()
            variances[k] = arm.covariance[np.ix_(index, index)].sum()
    if strategy.exploration > 0.0 and generator.random() < strategy.exploration:
        return Scores(tuple(generator.random(len(arms)).tolist()), tuple(means.tolist()), True)
    draws = generator.normal(means, learned.noise * np.sqrt(np.maximum(variances, 0.0)))
    return Scores(tuple(draws.tolist()), tuple(means.tolist()), False)
