"""Small, dependency-light statistics shared by the lexicon stages.

Everything here is seeded and vectorised with numpy so a lexicon is reproducible for a seed.
The resampling tests draw their random matrices in row blocks of at most ``BLOCK_ELEMENTS``
numbers, so their memory does not grow with the number of prompts; numpy's generator yields the
same stream whether a matrix is drawn at once or block by block, so the results are the same
as drawing it whole.
"""

from __future__ import annotations

import math

import numpy as np

BLOCK_ELEMENTS = 1 << 18  # numbers per random block (2 MiB of float64)


def _blocks(rows: int, columns: int, block_elements: int) -> list[int]:
    """Row counts of consecutive blocks covering ``rows`` rows of ``columns`` numbers."""
    step = max(1, block_elements // max(columns, 1))
    return [min(step, rows - start) for start in range(0, rows, step)]


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
    values: np.ndarray,
    n_permutations: int = 2000,
    rng: np.random.Generator | None = None,
    block_elements: int = BLOCK_ELEMENTS,
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
    choices = np.array([-1.0, 1.0])
    extreme = 0
    for rows in _blocks(n_permutations, n, block_elements):
        signs = rng.choice(choices, size=(rows, n))
        extreme += int(np.sum(np.abs((signs * x).mean(axis=1)) >= observed - 1e-12))
    return float((extreme + 1) / (n_permutations + 1))


def bootstrap_ci(
    values: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    rng: np.random.Generator | None = None,
    block_elements: int = BLOCK_ELEMENTS,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = rng or np.random.default_rng(0)
    means = np.concatenate(
        [
            x[rng.integers(0, x.size, size=(rows, x.size))].mean(axis=1)
            for rows in _blocks(n_resamples, x.size, block_elements)
        ]
    )
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
