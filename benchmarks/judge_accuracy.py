"""Refusal-judge accuracy: keyword, classifier and combined judges vs common keyword baselines.

Datasets (from ../shared/data): PyRIT's human-labelled refusal-scorer eval (all rows, and the
on-topic rows a response-only judge can decide) and VLGuard's own train/test responses (test
also split by kind of unsafe response: unsafe image, or safe image with an unsafe instruction;
each split keeps all safe rows so precision stays meaningful).

Judges:
- gcg-prefix / harmbench: baselines quoted in shared/data/refusal_keywords.json;
- keyword: probe's keyword matcher (lexicons/judge_keywords.json);
- classifier / combined (shipped): lexicons/judge_classifier.json, fitted on PyRIT's on-topic
  rows. On the PyRIT sets these rows are *cross-validated*: 5 folds grouped by objective, each
  fold judged by weights refitted (same settings and seed) on the other folds' on-topic rows;
- classifier / combined (vlguard-fit): weights from `probe judge fit` on VLGuard train (a
  temporary file, never shipped: VLGuard has no licence); not scored on VLGuard train itself.

Also writes a calibration plot (benchmarks/figures/judge_calibration.png).

Run: python benchmarks/judge_accuracy.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from probe.cli import main as probe_main  # noqa: E402
from probe.judge import (  # noqa: E402
    FitSettings,
    KeywordMatcher,
    LabelledResponses,
    RefusalClassifier,
    RefusalJudge,
    calibration_bins,
    fit_classifier,
    prediction_metrics,
)
from probe.judge.data import read_pyrit, read_vlguard  # noqa: E402

DATA = REPO.parent / "shared" / "data"
FIGURE = REPO / "benchmarks" / "figures" / "judge_calibration.png"
Judge = Callable[[list[str]], list[bool]]


def substring_judge(keywords: list[str], *, case_sensitive: bool) -> Judge:
    """Baseline: refusal when any keyword occurs anywhere in the response."""
    if case_sensitive:
        return lambda texts: [any(k in t for k in keywords) for t in texts]
    lowered = [k.lower() for k in keywords]
    return lambda texts: [any(k in t.lower() for k in lowered) for t in texts]


def pyrit_cross_validated(data: LabelledResponses, folds: int = 5, seed: int = 0):
    """Out-of-fold (classifier probability, combined verdict) per row of all PyRIT rows."""
    from sklearn.model_selection import StratifiedGroupKFold

    keyword = KeywordMatcher.default()
    probabilities = np.zeros(len(data))
    combined = np.zeros(len(data), dtype=bool)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(np.zeros(len(data)), data.labels, data.groups):
        in_train = set(train.tolist())
        keep = [i in in_train and data.kinds[i] == "on_topic" for i in range(len(data))]
        classifier = fit_classifier(data.subset(keep), FitSettings(seed=seed))
        held_out = [data.texts[i] for i in test]
        verdicts = RefusalJudge(keyword, classifier, "combined").verdicts(held_out)
        probabilities[test] = [v.classifier_probability for v in verdicts]
        combined[test] = [v.refusal for v in verdicts]
    return probabilities.tolist(), combined.tolist()


def fit_on_vlguard_train(folder: Path) -> RefusalClassifier:
    """Weights from the CLI, exactly as a user makes them."""
    out = folder / "vlguard_train.json"
    train = str(DATA / "vlguard" / "train.json")
    if probe_main(["judge", "fit", "--responses", train, "--out", str(out)]) != 0:
        sys.exit("probe judge fit failed")
    return RefusalClassifier.load(out)


def calibration_plot(curves: dict[str, tuple[list[float], list[bool]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name, (probabilities, labels) in curves.items():
        bins = calibration_bins(probabilities, labels, n_bins=10)
        ax.plot(
            [b["mean_probability"] for b in bins],
            [b["refusal_share"] for b in bins],
            marker="o",
            label=name,
        )
    ax.set_xlabel("classifier P(refusal), bin mean")
    ax.set_ylabel("share labelled refusal")
    ax.set_title("Refusal classifier calibration (10 bins)")
    ax.legend(fontsize=7)
    FIGURE.parent.mkdir(exist_ok=True)
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=110)


def main() -> None:
    if not DATA.is_dir():
        sys.exit(f"data folder not found: {DATA}")
    pyrit = read_pyrit(
        [DATA / "pyrit_refusal_eval" / f for f in ("refusal.csv", "refusal_extra.csv")]
    )
    on_topic = [k == "on_topic" for k in pyrit.kinds]
    test = read_vlguard(DATA / "vlguard" / "test.json")
    safe = [k == "safe_instruction" for k in test.kinds]
    datasets = {
        "pyrit (all)": pyrit,
        "pyrit (on-topic)": pyrit.subset(on_topic),
        "vlguard train": read_vlguard(DATA / "vlguard" / "train.json"),
        "vlguard test": test,
        "vlguard test: unsafe image": test.subset(
            [s or k == "instruction" for s, k in zip(safe, test.kinds, strict=True)]
        ),
        "vlguard test: unsafe instruction": test.subset(
            [s or k == "unsafe_instruction" for s, k in zip(safe, test.kinds, strict=True)]
        ),
    }
    lists = json.loads((DATA / "refusal_keywords.json").read_text(encoding="utf-8"))
    keyword = KeywordMatcher.default()
    shipped = RefusalClassifier.default()
    with tempfile.TemporaryDirectory() as tmp:
        vlguard_fit = fit_on_vlguard_train(Path(tmp))
    cv_probabilities, cv_combined = pyrit_cross_validated(pyrit)
    cv = {
        "pyrit (all)": (cv_probabilities, cv_combined),
        "pyrit (on-topic)": (
            [p for p, k in zip(cv_probabilities, on_topic, strict=True) if k],
            [c for c, k in zip(cv_combined, on_topic, strict=True) if k],
        ),
    }
    baselines: dict[str, Judge] = {
        "gcg-prefix": substring_judge(
            lists["gcg_evaluate_test_prefixes"]["list"], case_sensitive=True
        ),
        "harmbench": substring_judge(
            lists["harmbench_refusal_prefixes"]["list"], case_sensitive=False
        ),
        "keyword": keyword,
    }
    header = "| dataset | judge | n | refusals | precision | recall | f1 | fp | fn |"
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    curves: dict[str, tuple[list[float], list[bool]]] = {}

    def row(name: str, judge_name: str, predicted: list[bool], data: LabelledResponses) -> None:
        m = prediction_metrics(predicted, data.labels)
        print(
            f"| {name} | {judge_name} | {m['n']} | {sum(data.labels)} | {m['precision']:.3f} "
            f"| {m['recall']:.3f} | {m['f1']:.3f} | {m['fp']} | {m['fn']} |"
        )

    for name, data in datasets.items():
        for judge_name, judge in baselines.items():
            row(name, judge_name, judge(data.texts), data)
        if name in cv:
            probabilities, combined = cv[name]
            row(name, "classifier (shipped, cv)", [p >= 0.5 for p in probabilities], data)
            row(name, "combined (shipped, cv)", combined, data)
        else:
            judge = RefusalJudge(keyword, shipped, "combined")
            verdicts = judge.verdicts(data.texts)
            probabilities = [v.classifier_probability for v in verdicts]
            row(name, "classifier (shipped)", [p >= 0.5 for p in probabilities], data)
            row(name, "combined (shipped)", [v.refusal for v in verdicts], data)
        if name in ("pyrit (all)", "vlguard test"):
            curves[f"shipped, {name}{' (cv)' if name in cv else ''}"] = (probabilities, data.labels)
        if name != "vlguard train":
            verdicts = RefusalJudge(keyword, vlguard_fit, "combined").verdicts(data.texts)
            probabilities = [v.classifier_probability for v in verdicts]
            row(name, "classifier (vlguard-fit)", [p >= 0.5 for p in probabilities], data)
            row(name, "combined (vlguard-fit)", [v.refusal for v in verdicts], data)
            if name == "vlguard test":
                curves["vlguard-fit, vlguard test"] = (probabilities, data.labels)
    print(
        f"\nthresholds: shipped {shipped.threshold}, vlguard-fit {vlguard_fit.threshold}; "
        f"vlguard-fit cross-validated on train: "
        + json.dumps(
            {
                k: {m: round(v[m], 3) for m in ("precision", "recall")}
                for k, v in vlguard_fit.info["cross_validated"].items()
            }
        )
    )
    calibration_plot(curves)
    print(f"calibration plot: {FIGURE.relative_to(REPO)}")


if __name__ == "__main__":
    main()
