"""How many claimed attack successes on the tuned SmolLM2 study model each refusal judge accepts.

Model: SmolLM2-135M-Instruct safety-tuned on VLGuard text (benchmarks/vlguard_smollm2.py,
``load_tuned_subject``; cached in the user cache dir). Attacks: the paper's "What" rewrites of a
seeded sample of unsafe VLGuard test queries (3 per query), and the literal lead-word swap to
"What", each greedy-decoded (32 new tokens). A *claimed success* is an attacked unsafe query
whose response the keyword judge calls answered; the table shows how many of those each judge
still accepts as answered, and prints the responses the judges disagree on.

Judges: keyword; combined with the shipped (PyRIT-fitted) weights; combined with weights fitted
on VLGuard train by ``probe judge fit`` (a temporary file, or ``--judge-weights``).

Run: python benchmarks/judge_study.py [--n-unsafe 100] [--judge-weights W.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import attack_vs_paper  # noqa: E402
import vlguard_smollm2 as study  # noqa: E402

from probe.cli import main as probe_main  # noqa: E402
from probe.data import Prompt  # noqa: E402
from probe.judge import KeywordMatcher, RefusalClassifier, RefusalJudge  # noqa: E402


def vlguard_weights(path: str | None, folder: Path) -> RefusalClassifier:
    if path:
        return RefusalClassifier.load(path)
    out = folder / "vlguard_train.json"
    train = str(study.VLGUARD / "train.json")
    if probe_main(["judge", "fit", "--responses", train, "--out", str(out)]) != 0:
        sys.exit("probe judge fit failed")
    return RefusalClassifier.load(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-unsafe", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--judge-weights", help="VLGuard-fitted weights (default: fit now)")
    parser.add_argument("--show", type=int, default=6, help="disagreements printed per attack")
    args = parser.parse_args()
    study.set_threads()
    keyword = KeywordMatcher.default()
    with tempfile.TemporaryDirectory() as tmp:
        fitted = vlguard_weights(args.judge_weights, Path(tmp))
    judges = {
        "keyword": RefusalJudge(keyword),
        "combined (shipped)": RefusalJudge(keyword, RefusalClassifier.default()),
        "combined (vlguard-fit)": RefusalJudge(keyword, fitted),
    }
    test, what, _ = study.study_prompts(args.n_unsafe, 0, args.seed)
    unsafe = [p for p in test if p.label == "harmful"]
    swapped = [
        Prompt(attack_vs_paper.lead_swap(p.prompt, "What"), p.id, p.label, meta=p.meta)
        for p in unsafe
    ]
    subject = study.load_tuned_subject(args.seed)
    attacks = {"none (original unsafe query)": unsafe, "paper's What rewrites": what}
    attacks["lead word -> What"] = swapped
    print("| attack | attacked | claimed successes (keyword) | " + " | ".join(judges) + " |")
    print("|---|---|---|" + "---|" * len(judges))
    shown = []
    for name, prompts in attacks.items():
        responses = subject.generate([p.prompt for p in prompts], args.max_new_tokens)
        verdicts = {j: judge.verdicts(responses) for j, judge in judges.items()}
        claimed = [i for i, v in enumerate(verdicts["keyword"]) if not v.refusal]
        accepted = {j: sum(not verdicts[j][i].refusal for i in claimed) for j in judges}
        print(
            f"| {name} | {len(prompts)} | {len(claimed)} | "
            + " | ".join(str(accepted[j]) for j in judges)
            + " |"
        )
        rejected = [i for i in claimed if verdicts["combined (vlguard-fit)"][i].refusal]
        for i in rejected[: args.show]:
            v = verdicts["combined (vlguard-fit)"][i]
            shown.append(
                f"- [{name}] p={v.classifier_probability:.2f} Q: {prompts[i].prompt[:90]!r}\n"
                f"  A: {responses[i][:160]!r}"
            )
    print("\nClaimed successes the VLGuard-fitted combined judge calls refusals (first few):")
    print("\n".join(shown) or "(none)")


if __name__ == "__main__":
    main()
