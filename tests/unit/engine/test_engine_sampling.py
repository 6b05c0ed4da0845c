"""Thompson draws in blocks (``engine/sampling.py``): the banded draws, which draw per
decision only the candidates above a threshold, against the exact law of the ranking.

The reference is computed, not sampled: ``P(i ranks first) = ∫ f_i(x) Π_{j≠i} F_j(x) dx``
on a fine grid. Seeds are fixed; the bounds are 5 standard errors, so a sampler that is
off by a few percent fails (the last test shows that a wrong membership law is caught).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from nextoffer.engine.sampling import Band, BandedBlock, FullBlock, Posterior

Make = Callable[[int, int], Posterior]
GRID = np.linspace(0.0, 1.0, 40_001)[1:-1]


def beta_posteriors(seed: int, n: int) -> Posterior:
    """Click counts like a strategy's: some offers unseen, some with thousands of
    impressions, rates from 1 % to 20 %."""
    rng = np.random.default_rng(seed)
    impressions = rng.choice([0, 5, 50, 200, 2000], size=n).astype(float)
    clicks = np.floor(impressions * rng.uniform(0.01, 0.2, size=n))
    return Posterior(True, 1.0 + clicks, 1.0 + impressions - clicks)


def gaussian_posteriors(seed: int, n: int) -> Posterior:
    rng = np.random.default_rng(seed)
    return Posterior(False, rng.normal(0.05, 0.03, size=n), rng.uniform(0.005, 0.05, size=n))


def exact_first(posterior: Posterior) -> np.ndarray:
    """P(each candidate's draw is the largest), by numerical integration."""
    if posterior.beta:
        grid = GRID
    else:
        lo = float((posterior.a - 9 * posterior.b).min())
        hi = float((posterior.a + 9 * posterior.b).max())
        grid = np.linspace(lo, hi, 40_001)
    step = grid[1] - grid[0]
    density = np.exp(
        np.stack(
            [posterior.log_density(grid, np.full(len(grid), i)) for i in range(len(posterior))]
        )
    )
    density /= density.sum(axis=1, keepdims=True) * step
    cdf = np.clip(np.cumsum(density, axis=1) * step, 1e-300, 1.0)
    logs = np.log(cdf)
    others = logs.sum(axis=0) - logs
    first: np.ndarray = (density * np.exp(others)).sum(axis=1) * step
    return first


def first_counts(block_of: Callable[[np.random.Generator], Any], n: int, rows: int) -> np.ndarray:
    """How often each candidate is ranked first over ``rows`` decisions."""
    counts = np.zeros(n)
    generator = np.random.default_rng(11)
    taken = 0
    while taken < rows:
        block = block_of(generator)
        while taken < rows and (scores := block.take(generator)) is not None:
            counts[next(iter(scores.order))] += 1
            taken += 1
    return counts


def assert_law(counts: np.ndarray, expected: np.ndarray) -> None:
    rows = counts.sum()
    error = np.sqrt(expected * (1.0 - expected) / rows)
    deviation = np.abs(counts / rows - expected)
    assert (deviation <= 5.0 * error + 2e-3).all(), (deviation / (error + 1e-12)).max()


@pytest.mark.parametrize("make", [beta_posteriors, gaussian_posteriors])
def test_the_best_draw_of_a_banded_block_has_the_exact_law(make: Make) -> None:
    posterior = make(3, 120)
    band = Band(posterior, 8.0)
    assert len(band.envelope) > 0 and band.total > 0  # the envelope draws some
    counts = first_counts(
        lambda g: BandedBlock(range(120), posterior, g, 256, 0.0, band), 120, 30_000
    )
    assert_law(counts, exact_first(posterior))


def test_full_blocks_and_banded_blocks_agree_on_the_law() -> None:
    posterior = beta_posteriors(5, 80)
    exact = exact_first(posterior)
    band = Band(posterior, 6.0)
    banded = first_counts(
        lambda g: BandedBlock(range(80), posterior, g, 256, 0.0, band), 80, 20_000
    )
    full = first_counts(lambda g: FullBlock(range(80), posterior, g, 256, 0.0, None), 80, 20_000)
    assert_law(banded, exact)
    assert_law(full, exact)


@pytest.mark.parametrize("make", [beta_posteriors, gaussian_posteriors])
def test_a_walk_past_the_band_draws_every_candidate_from_its_posterior(make: Make) -> None:
    """Walked to the end, each candidate's draw has its posterior's mean and variance (the
    band's members and the rest drawn below the threshold, together)."""
    n, rows = 60, 4_000
    posterior = make(7, n)
    band = Band(posterior, 4.0)
    generator = np.random.default_rng(2)
    draws = np.zeros((rows, n))
    taken = 0
    while taken < rows:
        block = BandedBlock(range(n), posterior, generator, 256, 0.0, band)
        while taken < rows and (scores := block.take(generator)) is not None:
            order = list(scores.order)
            assert sorted(order) == list(range(n))  # every candidate once
            values = [scores.draws[p] for p in order]
            assert values == sorted(values, reverse=True)  # best first
            draws[taken, order] = values
            taken += 1
    a, b = posterior.a, posterior.b
    if posterior.beta:
        mean, variance = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1.0))
    else:
        mean, variance = a, b * b
    z = (draws.mean(axis=0) - mean) / np.sqrt(variance / rows)
    assert np.abs(z).max() < 5.0, np.abs(z).max()
    ratio = draws.var(axis=0) / variance
    assert (np.abs(ratio - 1.0) < 5.0 * math.sqrt(2.0 / rows) + 0.02).all(), ratio


@pytest.mark.parametrize("n", [40, 300])
def test_a_full_block_walks_every_candidate_best_first(n: int) -> None:
    """Whole rows sorted up front (short lists) or a sorted head and the rest sorted on
    the way (long ones): either way a walk to the end meets every candidate once, in
    falling draw order, and stopping early leaves the rest undrawn-for."""
    posterior = gaussian_posteriors(4, n)
    generator = np.random.default_rng(3)
    block = FullBlock(range(n), posterior, generator, 8, 0.0, None)
    while (scores := block.take(generator)) is not None:
        order = list(scores.order)
        assert sorted(order) == list(range(n))
        values = [float(scores.draws[p]) for p in order]
        assert values == sorted(values, reverse=True)
    partial = FullBlock(range(n), posterior, generator, 1, 0.0, None).take(generator)
    assert partial is not None
    assert len(list(itertools.islice(partial.order, 3))) == 3


def test_the_same_seed_draws_the_same_ranking() -> None:
    posterior = beta_posteriors(9, 100)
    band = Band(posterior, 8.0)

    def walk(seed: int) -> list[list[int]]:
        generator = np.random.default_rng(seed)
        block = BandedBlock(range(100), posterior, generator, 16, 0.0, band)
        orders = []
        while (scores := block.take(generator)) is not None:
            orders.append(list(itertools.islice(scores.order, 30)))
        return orders

    assert walk(4) == walk(4)
    assert walk(4) != walk(5)


def test_a_wrong_membership_law_is_caught() -> None:
    """The law test can fail: every other candidate entering the band too rarely (its
    membership law a third of the right one) moves the first-place law beyond the bound."""
    posterior = beta_posteriors(3, 120)
    band = Band(posterior, 8.0)
    lengths = np.diff(band.cells)
    lengths[::2] /= 3.0
    band.cells = np.concatenate(([0.0], np.cumsum(lengths)))
    band.total = float(band.cells[-1])
    counts = first_counts(
        lambda g: BandedBlock(range(120), posterior, g, 256, 0.0, band), 120, 30_000
    )
    with pytest.raises(AssertionError):
        assert_law(counts, exact_first(posterior))


def test_exploration_walks_a_uniformly_random_order_of_uniform_draws() -> None:
    """A banded block's exploring rows: every candidate once, values falling, the first
    place uniform over the candidates and its value the largest of n uniforms."""
    n, rows = 300, 6_000
    posterior = beta_posteriors(1, n)
    band = Band(posterior, 8.0)
    generator = np.random.default_rng(8)
    firsts = np.zeros(n)
    tops: list[float] = []
    walked = 0
    while walked < rows:
        block = BandedBlock(range(n), posterior, generator, 64, 1.0, band)
        while walked < rows and (scores := block.take(generator)) is not None:
            assert scores.explored
            order = list(itertools.islice(scores.order, 3)) if walked % 50 else list(scores.order)
            if walked % 50 == 0:
                assert sorted(order) == list(range(n))
            values = [scores.draws[p] for p in order]
            assert values == sorted(values, reverse=True)
            firsts[order[0]] += 1
            tops.append(values[0])
            walked += 1
    assert_law(firsts, np.full(n, 1.0 / n))
    # E[max of n uniforms] = n / (n + 1), sd ≈ 1 / n
    assert abs(float(np.mean(tops)) - n / (n + 1)) < 5.0 / n / math.sqrt(rows)
