"""Refusal judge: decide from a generated response whether the model refused.

Every flip that probe claims is verified by greedy generation + this judge (README, "What
an audit does"), and a missed refusal counted as compliance is a false attack success. Two
opinions, one policy:

- :class:`KeywordMatcher` (``keyword``): refusal prefixes and phrases, exact and explainable,
  high precision; misses refusals worded as lectures or moderation verdicts;
- :class:`RefusalClassifier` (``classifier``): TF-IDF character n-grams + logistic regression,
  weights in plain JSON (shipped: fitted on PyRIT's MIT-licensed refusal set; or your own from
  ``probe judge fit``);
- :class:`RefusalJudge` (``combined`` by default): refusal iff the keyword matcher fires **or**
  the classifier's probability reaches the weights file's combining threshold, a threshold picked
  at fit time from out-of-fold predictions so the combination keeps the keyword matcher's
  precision. See :class:`RefusalJudge` for the exact rule.

``load_judge(kind, weights)`` builds any of them; :meth:`RefusalJudge.verdicts` returns
:class:`Verdict` records carrying both opinions. Readers of the labelled sets (PyRIT, VLGuard,
your own JSONL/CSV) are in :mod:`probe.judge.data`, metrics in :mod:`probe.judge.metrics`.
"""

from probe.judge.classifier import FitSettings, RefusalClassifier, fit_classifier
from probe.judge.data import (
    LabelledResponses,
    load_refusal_eval,
    load_responses,
    load_vlguard_responses,
)
from probe.judge.keyword import DEFAULT_WINDOW, KeywordMatcher, normalize_response
from probe.judge.metrics import calibration_bins, judge_metrics, prediction_metrics
from probe.judge.policy import JUDGE_KINDS, RefusalJudge, Verdict, load_judge

__all__ = [
    "DEFAULT_WINDOW",
    "JUDGE_KINDS",
    "FitSettings",
    "KeywordMatcher",
    "LabelledResponses",
    "RefusalClassifier",
    "RefusalJudge",
    "Verdict",
    "calibration_bins",
    "fit_classifier",
    "judge_metrics",
    "load_judge",
    "load_refusal_eval",
    "load_responses",
    "load_vlguard_responses",
    "normalize_response",
    "prediction_metrics",
]
