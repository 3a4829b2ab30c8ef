"""Accuracy of a judge on labelled responses (refusal = the positive class) and calibration."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from probe.errors import ProbeError


def judge_metrics(
    judge: Callable[[list[str]], list[bool]], texts: Sequence[str], labels: Sequence[bool]
) -> dict[str, float | int]:
    """Precision, recall, F1 and accuracy of ``judge`` (refusal = positive class), with counts.

    A ratio whose denominator is zero is reported as 0.0.
    """
    if len(texts) != len(labels):
        raise ProbeError(f"{len(texts)} texts but {len(labels)} labels")
    return prediction_metrics(judge(list(texts)), labels)


def prediction_metrics(predicted: Sequence[bool], labels: Sequence[bool]) -> dict[str, float | int]:
    """:func:`judge_metrics` of verdicts already made."""
    if len(predicted) != len(labels):
        raise ProbeError(f"{len(predicted)} verdicts but {len(labels)} labels")
    pairs = list(zip(predicted, labels, strict=True))
    tp = sum(bool(p) and y for p, y in pairs)
    fp = sum(bool(p) and not y for p, y in pairs)
    fn = sum(y and not p for p, y in pairs)
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = (n - fp - fn) / n if n else 0.0
    return {
        "n": n,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": accuracy,
    }


def calibration_bins(
    probabilities: Sequence[float], labels: Sequence[bool], n_bins: int = 10
) -> list[dict[str, float | int]]:
    """Reliability table: per equal-width probability bin, mean probability vs refusal share.

    Empty bins are left out; the last bin includes probability 1.0.
    """
    if len(probabilities) != len(labels):
        raise ProbeError(f"{len(probabilities)} probabilities but {len(labels)} labels")
    if n_bins < 1:
        raise ProbeError(f"n_bins must be at least 1, got {n_bins}")
    bins: list[list[tuple[float, bool]]] = [[] for _ in range(n_bins)]
    for p, y in zip(probabilities, labels, strict=True):
        bins[min(int(p * n_bins), n_bins - 1)].append((p, y))
    return [
        {
            "low": i / n_bins,
            "high": (i + 1) / n_bins,
            "n": len(b),
            "mean_probability": sum(p for p, _ in b) / len(b),
            "refusal_share": sum(y for _, y in b) / len(b),
        }
        for i, b in enumerate(bins)
        if b
    ]
