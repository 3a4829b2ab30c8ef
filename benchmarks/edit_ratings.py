"""Blind grammaticality ratings of one-word edits vs the attack's constraints (issue 12).

``benchmarks/data/edit_ratings.tsv`` holds a blind rater's verdicts (grammatical, natural) on 121
one-word edits the SmolLM2 study's attacks verified (tuned and balanced models, constrained
and unconstrained, 2026-12-04) and on the 21 original queries as controls, shuffled together so
the rater could not tell edits from originals. The file stores each edit as (query id, kind,
position, new word) and a hash of its text, not the text: this script rebuilds every sentence
from VLGuard (``../shared/data``), checks the hash, and applies the *current* constraints, so
the table shows how many edits each constraint level accepts and how many of those the rater
called grammatical, and how well fluency measures under the tuned SmolLM2's LM separate them.

    python benchmarks/edit_ratings.py          # needs ../shared/data and the tuned SmolLM2

``benchmarks/data/cascade_ratings.tsv`` holds the same rater's kind of verdicts on the 25 flips
of the thorough recipe on all 182 study queries (2026-12-05; rules written before it saw them, so
a held-out sample), with their 25 originals as blind controls, plus a paired verdict: whether the
edited text asks for the same thing as the original (``same_request``). Batch 2 adds the 6 flips
that recipe found on the same queries once quantifiers and negations were ruled out, rated the
same way with their originals.

    python benchmarks/edit_ratings.py --ratings benchmarks/data/cascade_ratings.tsv

Batch 3 adds the 7 flips the recipe's wider width (share of the admitted words) found that no
earlier batch holds, rated the same way. ``--flips RECORDS`` rates only one run's flips.
Batch 4 (2026-12-05, session 6) rates every other verified flip of the exhaustive dump over
the study's queries (62 edits; the same procedure, a new rater instance), so that
``candidate_ranking.py --analyze ... --list-flips`` can say which queries have any flip that
keeps the request.

The tuned model is the one ``benchmarks/vlguard_smollm2.py`` builds (never built here).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RATINGS = HERE / "data" / "edit_ratings.tsv"


def rebuild(rows: list[dict], prompts: dict) -> list[dict]:
    """Each rated edit as (rating row, EditContext, Edit), rebuilt from its study prompt."""
    from probe.attack.transformations import EditContext

    out = []
    for row in rows:
        prompt = prompts[row["id"]]
        context = EditContext(prompt.query)
        at = int(row["position"]) if row["position"] else -1
        if row["kind"] == "substitution":
            edit = context.substitution(at, row["new_word"], "rated")
        elif row["kind"] == "insertion":
            edit = context.insertion(at, row["new_word"], "rated")
        else:
            edit = context.deletion(at)
        digest = hashlib.sha1(edit.variant.text.encode()).hexdigest()[:12]
        if digest != row["sha1"]:
            raise SystemExit(f"edit of {row['id']} does not rebuild the rated text: {edit}")
        out.append({"row": row, "context": context, "edit": edit})
    return out


def fluency_measures(lm, items: list[dict]) -> dict[str, list[float]]:
    """Per edit: change (edited minus original) of the mean per-token log-prob (the
    constraint's value), of the summed log-prob, and of the sum over the changed tokens and
    the next three (a window)."""
    from probe.subject.packing import common_prefix

    measures: dict[str, list[float]] = {"mean per token": [], "sum": [], "window +3": []}
    for item in items:
        original, variant = item["context"].text, item["edit"].variant.text
        lp_o, lp_v = lm.token_log_probs([original, variant])
        row_o, row_v = lm.row(original), lm.row(variant)
        shared = common_prefix(row_o, row_v)
        tail = 0
        while tail < min(len(row_o), len(row_v)) - shared and row_o[-1 - tail] == row_v[-1 - tail]:
            tail += 1
        end_o, end_v = len(row_o) - tail - 1 + 3, len(row_v) - tail - 1 + 3
        measures["mean per token"].append(sum(lp_v) / len(lp_v) - sum(lp_o) / len(lp_o))
        measures["sum"].append(sum(lp_v) - sum(lp_o))
        measures["window +3"].append(sum(lp_v[shared - 1 : end_v]) - sum(lp_o[shared - 1 : end_o]))
    return measures


def of_flips(rows: list[dict], records: Path) -> list[dict]:
    """The rating of each flip a run reported (one per flip), and one control per query."""
    flips = {
        (r["id"], str(r["position"]), r["new_word"])
        for run in json.loads(records.read_text()).values()
        for r in run
        if r["flipped"]
    }
    edits = {(r["id"], r["position"], r["new_word"]): r for r in rows if r["kind"] != "original"}
    controls = {r["id"]: r for r in rows if r["kind"] == "original"}
    missing = flips - edits.keys()
    if missing:
        raise SystemExit(f"{len(missing)} flips of {records} are not rated, e.g. {min(missing)}")
    return [edits[f] for f in sorted(flips)] + [controls[i] for i in sorted({f[0] for f in flips})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ratings", type=Path, default=RATINGS, help="a ratings TSV")
    parser.add_argument(
        "--flips", type=Path, help="only the flips of this attack_efficiency.py --records file"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    import vlguard_smollm2 as study
    from sklearn.metrics import roc_auc_score

    from probe.attack.constraints import (
        BareTextLM,
        ContentConstraint,
        FluencyConstraint,
        PartOfSpeechConstraint,
        default_max_drop,
    )

    with args.ratings.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if args.flips:
        rows = of_flips(rows, args.flips)
    test, _, _ = study.study_prompts(100, 100, 0)
    prompts = {p.id: p for p in test}
    controls = [r for r in rows if r["kind"] == "original"]
    items = rebuild([r for r in rows if r["kind"] != "original"], prompts)
    vocabulary = frozenset(
        c.words[i].text.lower() for c in (i["context"] for i in items) for i in c.content
    )
    if not (study.tuned_dir(0) / "probe_study.json").is_file():
        raise SystemExit("the tuned SmolLM2 is not built: run benchmarks/vlguard_smollm2.py")
    subject = study.load_tuned_subject(0)
    lm = BareTextLM(subject.model, subject.tokenizer)
    bound = default_max_drop(subject.model)
    fluency = FluencyConstraint(lm, bound)
    content, pos = ContentConstraint(), PartOfSpeechConstraint()
    for item in items:
        item["context"].content_vocabulary = vocabulary
        (edit,), context = [item["edit"]], item["context"]
        item["values"] = {
            **content.values(context, [edit])[0],
            **pos.values(context, [edit])[0],
            **fluency.values(context, [edit])[0],
        }
    grammatical = [int(i["row"]["grammatical"]) for i in items]
    natural = [int(i["row"]["natural"]) for i in items]
    levels = {
        "none": lambda v: True,
        "content": lambda v: not v["content_word"],
        "content + part of speech": lambda v: not v["content_word"] and v["pos_ok"],
        f"+ fluency (mean drop <= {bound})": lambda v: (
            not v["content_word"] and v["pos_ok"] and v["fluency_ok"]
        ),
    }
    fine = sum(int(r["grammatical"]) for r in controls)
    print(f"controls (original queries) rated grammatical: {study.rate_ci(fine, len(controls))}")
    paired = "same_request" in rows[0]
    header = f"{'constraints enforced':<34} {'accepted':>8}  {'grammatical (blind)':<26} "
    print(header + f"{'natural':<26}" + (" same request   all three" if paired else ""))
    for name, accepts in levels.items():
        kept = [i["row"] for i in items if accepts(i["values"])]
        g = sum(int(r["grammatical"]) for r in kept)
        n = sum(int(r["natural"]) for r in kept)
        shares = f"{study.rate_ci(g, len(kept)):<26} {study.rate_ci(n, len(kept)):<26}"
        if paired:
            same = sum(int(r["same_request"]) for r in kept)
            every = sum(int(r["natural"]) * int(r["same_request"]) for r in kept)
            shares += f" {study.rate_ci(same, len(kept))}  {study.rate_ci(every, len(kept))}"
        print(f"{name:<34} {len(kept):>8}  {shares}")
    passing = [k for k, i in enumerate(items) if levels["content + part of speech"](i["values"])]
    print("\nfluency measure (tuned SmolLM2 LM, edited minus original): AUC for the rater's labels")
    print(f"{'measure':<16} {'grammatical':>11} {'natural':>8} {'natural | content+POS':>22}")
    for name, scores in fluency_measures(lm, items).items():
        sub = [scores[k] for k in passing]
        areas = (
            roc_auc_score(grammatical, scores),
            roc_auc_score(natural, scores),
            roc_auc_score([natural[k] for k in passing], sub),
        )
        print(f"{name:<16} {areas[0]:>11.3f} {areas[1]:>8.3f} {areas[2]:>22.3f}")
    print("\nbound on the mean drop (nats/token) among content + POS edits: kept, natural share")
    for drop in (0.1, 0.2, 0.3, 0.4, 0.5, 0.75):
        kept = [k for k in passing if items[k]["values"]["fluency"] >= -drop]
        n = sum(natural[k] for k in kept)
        print(f"  {drop:<5} {len(kept):>3}/{len(passing)}  natural {study.rate_ci(n, len(kept))}")
    for k in passing:
        if not grammatical[k]:
            print("accepted by content + POS, rated ungrammatical:", items[k]["edit"].variant.text)


if __name__ == "__main__":
    main()
