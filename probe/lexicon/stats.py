"""Small, dependency-light statistics shared by the lexicon stages.

Everything here is seeded and vectorised with numpy so a lexicon is reproducible for a seed.
"""

from __future__ import annotations

import math

import numpy as np


def benjamini_hochberg(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Benjamini-Hochberg q-values (step-up FDR adjustment), in the input order."""
    p = np.asarray(p_values, dtype=float)
    n = p.size
    if n == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    ranked = p[order] * n / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(n)
    q[order] = np.clip(ranked, 0.0, 1.0)
    return q


def sign_flip_p_value(
    values: np.ndarray, n_permutations: int = 2000, rng: np.random.Generator | None = None
) -> float:
    """Two-sided p-value that the mean of ``values`` is zero, by random sign flips.

    Exact enumeration is used when 2**n <= n_permutations. The observed statistic is counted
    among the permutations (the +1 correction), so p is never 0.
    """
    x = np.asarray(values, dtype=float)
    n = x.size
    if n == 0:
        return 1.0
    observed = abs(x.mean())
    if 2**n <= n_permutations:
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        stats = np.abs((signs * x).mean(axis=1))
        return float(np.mean(stats >= observed - 1e-12))
    rng = rng or np.random.default_rng(0)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_permutations, n))
    stats = np.abs((signs * x).mean(axis=1))
    return float((np.sum(stats >= observed - 1e-12) + 1) / (n_permutations + 1))


def bootstrap_ci(
    values: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = rng or np.random.default_rng(0)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return (float(low), float(high))


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sane at 0 and n)."""
    if trials == 0:
        return (0.0, 1.0)
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    phat = successes / trials
    denom = 1 + z * z / trials
    centre = (phat + z * z / (2 * trials)) / denom
    half = z * math.sqrt(phat * (1 - phat) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
