"""Paired statistics for comparing two runs on the same prompts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from probe.lexicon.stats import bootstrap_ci, wilson_interval


def rate(flags: Sequence[bool], confidence: float = 0.95) -> dict:
    """A proportion with its Wilson interval (``rate`` None when there are no trials)."""
    n, k = len(flags), int(sum(bool(f) for f in flags))
    low, high = wilson_interval(k, n, confidence)
    return {"rate": k / n if n else None, "ci_low": low, "ci_high": high, "k": k, "n": n}


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    rng: np.random.Generator | None = None,
) -> dict:
    """Mean of ``b - a`` over paired values with a percentile bootstrap interval (prompts are
    resampled as pairs); ``excludes_zero`` says whether the interval leaves out 0."""
    diffs = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if diffs.size == 0:
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None, "excludes_zero": False}
    low, high = bootstrap_ci(diffs, confidence, n_resamples, rng or np.random.default_rng(0))
    return {
        "n": int(diffs.size),
        "mean": float(diffs.mean()),
        "ci_low": low,
        "ci_high": high,
        "excludes_zero": bool(low > 0 or high < 0),
    }


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Exact McNemar test of paired yes/no outcomes: does B say yes more or less often than A?

    ``only_a``/``only_b`` count the discordant pairs; the two-sided p-value is the exact
    binomial test of ``only_b`` out of the discordant pairs at 1/2 (1.0 when there are none).
    """
    if len(a) != len(b):
        raise ValueError("mcnemar needs paired outcomes of equal length")
    only_a = sum(bool(x) and not bool(y) for x, y in zip(a, b, strict=True))
    only_b = sum(bool(y) and not bool(x) for x, y in zip(a, b, strict=True))
    discordant = only_a + only_b
    if discordant == 0:
        p_value = 1.0
    else:
        from scipy.stats import binomtest

        p_value = float(binomtest(only_b, discordant, 0.5).pvalue)
    return {
        "n": len(a),
        "only_a": only_a,
        "only_b": only_b,
        "rate_a": sum(map(bool, a)) / len(a) if a else None,
        "rate_b": sum(map(bool, b)) / len(b) if b else None,
        "p_value": p_value,
    }


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho; None with fewer than 3 pairs or no spread."""
    if len(x) < 3:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return float(rho) if math.isfinite(rho) else None
