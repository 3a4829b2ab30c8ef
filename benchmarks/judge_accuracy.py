"""Refusal-judge accuracy: probe's judge vs the keyword judges users usually reach for.

Datasets (from ../shared/data): PyRIT's human-labelled refusal-scorer eval (all rows, and the
on-topic rows a response-only judge can decide) and VLGuard's own train/test responses.
Baselines (lists quoted in shared/data/refusal_keywords.json):
- GCG test prefixes: case-sensitive substring anywhere in the response (llm-attacks);
- HarmBench refusal prefixes: lower-cased substring anywhere.

Run: python benchmarks/judge_accuracy.py
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from probe.judge import (  # noqa: E402
    RefusalJudge,
    judge_metrics,
    load_refusal_eval,
    load_vlguard_responses,
)

DATA = REPO.parent / "shared" / "data"
Judge = Callable[[list[str]], list[bool]]


def substring_judge(keywords: list[str], *, case_sensitive: bool) -> Judge:
    """Baseline: refusal when any keyword occurs anywhere in the response."""
    if case_sensitive:
        return lambda texts: [any(k in t for k in keywords) for t in texts]
    lowered = [k.lower() for k in keywords]
    return lambda texts: [any(k in t.lower() for k in lowered) for t in texts]


def main() -> None:
    if not DATA.is_dir():
        sys.exit(f"data folder not found: {DATA}")
    pyrit = [DATA / "pyrit_refusal_eval" / f for f in ("refusal.csv", "refusal_extra.csv")]
    datasets = {
        "pyrit (all)": load_refusal_eval(pyrit),
        "pyrit (on-topic)": load_refusal_eval(pyrit, on_topic_only=True),
        "vlguard train": load_vlguard_responses(DATA / "vlguard" / "train.json"),
        "vlguard test": load_vlguard_responses(DATA / "vlguard" / "test.json"),
    }
    lists = json.loads((DATA / "refusal_keywords.json").read_text(encoding="utf-8"))
    judges: dict[str, Judge] = {
        "probe": RefusalJudge.default(),
        "gcg-prefix": substring_judge(
            lists["gcg_evaluate_test_prefixes"]["list"], case_sensitive=True
        ),
        "harmbench": substring_judge(
            lists["harmbench_refusal_prefixes"]["list"], case_sensitive=False
        ),
    }
    header = "| dataset | judge | n | refusals | precision | recall | f1 | accuracy |"
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    for name, (texts, labels) in datasets.items():
        for judge_name, judge in judges.items():
            m = judge_metrics(judge, texts, labels)
            print(
                f"| {name} | {judge_name} | {m['n']} | {sum(labels)} | {m['precision']:.3f} "
                f"| {m['recall']:.3f} | {m['f1']:.3f} | {m['accuracy']:.3f} |"
            )


if __name__ == "__main__":
    main()
