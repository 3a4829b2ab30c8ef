"""Faithfulness of word attributions: do the top-scored words really move the margin?

For one prompt, rank its words by score (most toward refusal first) and delete them in that
order — the *deletion curve* of margins, from the full prompt to no words — or start from no
words and insert them in that order — the *insertion curve*. A faithful ranking makes the
deletion curve fall fast (low area) and the insertion curve rise fast (high area).
*Comprehensiveness* is the margin lost by deleting the top fraction q of words and
*sufficiency* the margin lost by keeping only them (averaged over ``fractions``; ERASER,
DeYoung et al. 2020): higher comprehensiveness and lower sufficiency are better. All values are
in margin units (log-odds), computed on the same prompts for every method; words are deleted
as in ``occlusion`` and scored with ``Subject.shared_prefix_margins``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from probe.attribution.base import WordAttribution, WordPerturber
from probe.errors import ProbeError
from probe.subject.text import Subject

FRACTIONS = (0.1, 0.2, 0.3, 0.5)
METRICS = ("deletion_auc", "insertion_auc", "comprehensiveness", "sufficiency")


@dataclass(frozen=True)
class Faithfulness:
    """Faithfulness of one prompt's attribution (margin units)."""

    deletion_auc: float
    insertion_auc: float
    comprehensiveness: float
    sufficiency: float
    deletion_curve: tuple[float, ...]
    insertion_curve: tuple[float, ...]


def faithfulness(
    subject: Subject, attribution: WordAttribution, fractions: Sequence[float] = FRACTIONS
) -> Faithfulness:
    """Deletion/insertion curves and their areas, comprehensiveness and sufficiency."""
    encoded = subject.encode(attribution.query)
    if [w.text for w in encoded.words] != list(attribution.words):
        raise ProbeError(f"attribution {attribution.id}: its words do not match the prompt's")
    perturber = WordPerturber(encoded)
    ranked = sorted(perturber.features, key=lambda w: -attribution.scores[w])
    n = len(ranked)
    deletions = [perturber.apply(ranked[:k]) for k in range(n + 1)]
    insertions = [perturber.apply(ranked[k:]) for k in range(n + 1)]
    margins = subject.shared_prefix_margins(encoded.input_ids, deletions + insertions)
    deletion, insertion = margins[: n + 1], margins[n + 1 :]
    tops = [max(1, math.ceil(q * n)) for q in fractions] if n else [0]
    return Faithfulness(
        deletion_auc=_area(deletion),
        insertion_auc=_area(insertion),
        comprehensiveness=float(np.mean([deletion[0] - deletion[k] for k in tops])),
        sufficiency=float(np.mean([deletion[0] - insertion[k] for k in tops])),
        deletion_curve=tuple(deletion.tolist()),
        insertion_curve=tuple(insertion.tolist()),
    )


def mean_faithfulness(
    subject: Subject,
    attributions: Sequence[WordAttribution],
    fractions: Sequence[float] = FRACTIONS,
) -> dict[str, float]:
    """Each faithfulness metric averaged over prompts."""
    rows = [faithfulness(subject, a, fractions) for a in attributions]
    return {m: float(np.mean([getattr(r, m) for r in rows])) for m in METRICS}


def _area(curve: np.ndarray) -> float:
    """Trapezoid area under a curve sampled at 0, 1/n, ..., 1 (its value if n = 0)."""
    n = len(curve) - 1
    if n == 0:
        return float(curve[0])
    return float((curve.sum() - (curve[0] + curve[-1]) / 2) / n)
