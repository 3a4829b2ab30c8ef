"""Unit tests of probe.lexicon.stats against values computed by hand."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from probe.lexicon.stats import benjamini_hochberg, bootstrap_ci, sign_flip_p_value, wilson_interval

# ------------------------------------------------------------------ Benjamini-Hochberg


def test_bh_matches_hand_computed_values():
    # sorted p: 0.01, 0.03, 0.04, 0.20 -> p * n / rank: 0.04, 0.06, 0.0533.., 0.20
    # step-up (running minimum from the largest): 0.04, 0.0533.., 0.0533.., 0.20
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.20])
    np.testing.assert_allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.20], rtol=0, atol=1e-12)


def test_bh_single_and_empty():
    np.testing.assert_allclose(benjamini_hochberg([0.3]), [0.3])
    assert benjamini_hochberg([]).size == 0


def test_bh_is_capped_monotone_and_keeps_input_order():
    p = np.array([0.9, 0.001, 0.5, 0.02, 1.0, 0.02, 0.3, 0.7])
    q = benjamini_hochberg(p)
    assert q.shape == p.shape
    assert np.all(q <= 1.0)
    assert np.all(q >= p - 1e-12)  # adjusting never makes a p-value smaller
    # order preserved: a smaller p never gets a larger q
    for i in range(p.size):
        for j in range(p.size):
            if p[i] <= p[j]:
                assert q[i] <= q[j] + 1e-12
    # ties get equal q
    assert q[3] == q[5]
    # the input is not modified
    assert p[0] == 0.9


def test_bh_caps_at_one():
    q = benjamini_hochberg([0.8, 0.9, 0.95])
    assert np.all(q <= 1.0)
    np.testing.assert_allclose(q, [0.95, 0.95, 0.95])


# ------------------------------------------------------------------ sign-flip test


def test_sign_flip_exact_enumeration_n4():
    # |mean| of [1,2,3,4] is 2.5; of the 16 sign patterns only all-plus and all-minus reach it.
    assert sign_flip_p_value(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(2 / 16)


def test_sign_flip_exact_enumeration_hand_count_n3():
    # sums of ±1 ±1 ±2: 4, 0, 2, -2, 2, -2, 0, -4 -> |sum| >= 2 in 6 of 8
    assert sign_flip_p_value(np.array([1.0, -1.0, 2.0])) == pytest.approx(6 / 8)


def test_sign_flip_degenerate_inputs():
    assert sign_flip_p_value(np.array([])) == 1.0
    assert sign_flip_p_value(np.zeros(5)) == 1.0
    # a single value: both sign patterns reach |x|
    assert sign_flip_p_value(np.array([3.0])) == 1.0


def test_sign_flip_sampled_branch_is_bounded_and_seeded():
    values = np.full(20, 5.0)  # 2**20 patterns > 100 permutations: the sampled branch
    n_perm = 100
    p = sign_flip_p_value(values, n_perm, np.random.default_rng(1))
    assert p >= 1 / (n_perm + 1)
    assert p == pytest.approx(1 / (n_perm + 1))  # all-same-sign draws are ~2e-6 likely
    noisy = np.random.default_rng(0).normal(size=30)
    a = sign_flip_p_value(noisy, 200, np.random.default_rng(7))
    b = sign_flip_p_value(noisy, 200, np.random.default_rng(7))
    assert a == b
    assert 1 / 201 <= a <= 1.0


# ------------------------------------------------------------------ bootstrap


def test_bootstrap_ci_deterministic_and_contains_mean():
    x = np.random.default_rng(3).normal(1.0, 2.0, size=40)
    a = bootstrap_ci(x, 0.95, 500, np.random.default_rng(11))
    b = bootstrap_ci(x, 0.95, 500, np.random.default_rng(11))
    assert a == b
    low, high = a
    assert low <= x.mean() <= high
    assert low < high
    wider = bootstrap_ci(x, 0.99, 500, np.random.default_rng(11))
    assert wider[0] <= low and wider[1] >= high


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci(np.array([2.5])) == (2.5, 2.5)
    low, high = bootstrap_ci(np.array([]))
    assert math.isnan(low) and math.isnan(high)
    assert bootstrap_ci(np.full(10, 4.0)) == (4.0, 4.0)


# ------------------------------------------------------------------ Wilson interval


def _wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.975)
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (5, 10, (0.2366, 0.7634)),
        (1, 20, (0.0089, 0.2361)),
    ],
)
def test_wilson_known_values(k, n, expected):
    low, high = wilson_interval(k, n)
    hand = _wilson_by_hand(k, n)
    assert low == pytest.approx(max(0.0, hand[0]), abs=1e-9)
    assert high == pytest.approx(min(1.0, hand[1]), abs=1e-9)
    assert low == pytest.approx(expected[0], abs=1e-3)
    assert high == pytest.approx(expected[1], abs=1e-3)


def test_wilson_no_trials_and_bounds():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for k in range(0, 8):
        low, high = wilson_interval(k, 7)
        assert 0.0 <= low <= k / 7 <= high <= 1.0
