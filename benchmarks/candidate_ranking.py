"""Candidate ranking: how early does a ranker put a one-word flip among the admissible words?

The guided source's candidate space at a position is every real one-token English word that
passes the content and part-of-speech constraints (the space ``attack_efficiency.py``'s
exhaustive search scores). This benchmark scores *every* such candidate exactly (margin,
shared-prefix KV cache), adds the fluency value and a judge-verified generation for the ones
whose margin crossed, and records two cheap per-candidate signals a ranker can use before any
exact query: the gradient's first-order estimate of the margin change, and the log-probability
the subject's own LM gives the new word after the words before it (one forward pass over the
bare text per prompt). ``--analyze`` then replays the guided search offline under each ranker:
positions in the attack's order, the first ``m`` words per position by the ranker, a query
budget; a prompt succeeds when a scored candidate is a verified, fluent flip.

    python benchmarks/candidate_ranking.py --smollm2 12 --out a.json --shard 0/2  # ~2-4 min a
    python benchmarks/candidate_ranking.py --smollm2 12 --out b.json --shard 1/2  # prompt, 1 core
    python benchmarks/candidate_ranking.py --analyze a.json b.json
    python benchmarks/candidate_ranking.py --analyze a.json b.json --study 100 \
        --list-flips benchmarks/data/cascade_ratings.tsv

``--list-flips`` prints, per query, every verified fluent flip of the space (best margin first)
with a blind rater's verdicts where the ratings file has them, and how many queries have a flip
that keeps the request: whether one exists is a property of the model, not of the search.
``--study 100`` keeps only the study's 100 + 100 test queries (the dumps also hold 17 others).
"""

from __future__ import annotations

import argparse
import csv
import functools
import itertools
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from probe.attack import OneWordAttack
from probe.attack.constraints import (
    BareTextLM,
    ContentConstraint,
    FluencyConstraint,
    PartOfSpeechConstraint,
    default_max_drop,
)
from probe.attack.goal import Goal, target_for
from probe.attack.transformations import EditContext, GradientGuided
from probe.attribution import get_attributor
from probe.judge import RefusalJudge
from probe.lexicon.builder import LexiconBuilder
from probe.lexicon.stats import wilson_interval
from probe.nlp import has_tagger, inflect_like

MAX_VERIFY = 30  # verified generations per prompt (crossed, fluent candidates, best first)


def first_token(tokenizer, word: str, at_start: bool) -> int:
    return tokenizer(("" if at_start else " ") + word, add_special_tokens=False)["input_ids"][0]


def dump(n: int, out: Path, shard: tuple[int, int] = (0, 1), skip: frozenset = frozenset()) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from attack_efficiency import smollm2_setup

    subject, prompts, label = smollm2_setup(n)
    judge = RefusalJudge.default()
    responses = subject.generate([p.prompt for p in prompts], 24)
    refused = {p.id: judge.is_refusal(r) for p, r in zip(prompts, responses, strict=True)}
    attributions = get_attributor("occlusion").attribute(subject, prompts)
    by_id = {a.id: a for a in attributions}
    lexicon = LexiconBuilder().fit(attributions).lexicon_
    lm = BareTextLM(subject.model, subject.tokenizer, subject.batch_size)
    fluency = FluencyConstraint(lm, default_max_drop(lm.model))
    attack = OneWordAttack(edit_kinds=("substitution",))
    tagged = has_tagger()
    contexts = {p.id: EditContext(p.query, tagged) for p in prompts}
    content_vocabulary = frozenset(
        e.word.lower() for e in lexicon.entries if e.role == "content"
    ) | {c.words[i].text.lower() for c in contexts.values() for i in c.content}
    records = []
    attacked = [p for p in prompts if target_for(p, refused[p.id]) is not None and p.id not in skip]
    for prompt in tqdm(attacked[shard[0] :: shard[1]], desc="prompts"):
        target = target_for(prompt, refused[prompt.id])
        assert target is not None
        started = time.perf_counter()
        goal = Goal(target, 0)
        context = contexts[prompt.id]
        context.content_vocabulary = content_vocabulary
        guided = GradientGuided(None)
        guided.prepare(subject, context, target)
        estimate: dict[int, dict[str, float]] = {}
        for index, pairs in guided.estimates_.items():  # keyed by the inflected word
            old, tag = context.words[index].text, context.tag(index)
            for word, value in pairs:
                estimate.setdefault(index, {}).setdefault(
                    inflect_like(word, old, tag).lower(), value
                )
        plan = attack._plan(
            context, by_id.get(prompt.id), target, [], [guided],
            [ContentConstraint(), PartOfSpeechConstraint()], {"content", "pos"},
        )  # fmt: skip
        starts = [context.words[i].start for i in context.alnum]
        rows = lm.next_word_log_probs(context.text, starts)  # what the guided prior reads
        prior = {i: row for i, row in zip(context.alnum, rows, strict=True) if row is not None}
        base = subject.encode(prompt.query).input_ids
        cache = subject.prefill(base)
        candidates = []
        for order, index in enumerate(plan.keys):
            group = plan[order]
            if not group:
                continue
            margins = subject.shared_prefix_margins(
                base, [subject.encode(e.variant).input_ids for e, _ in group], prefix=cache
            )
            at_start = index == context.lead
            for (edit, _), margin in zip(group, margins.tolist(), strict=True):
                token = first_token(subject.tokenizer, edit.new_word, at_start)
                candidates.append({
                    "order": order, "position": index, "word": edit.new_word,
                    "estimate": estimate.get(index, {}).get(edit.new_word.lower()),
                    "prior": float(prior[index][token]) if index in prior else None,
                    "progress": goal.progress(margin), "variant": edit.variant.text,
                })  # fmt: skip
        crossed = sorted((c for c in candidates if c["progress"] > 0), key=lambda c: -c["progress"])
        if crossed:
            edits = [context.substitution(c["position"], c["word"], "guided") for c in crossed]
            for c, values in zip(crossed, fluency.values(context, edits), strict=True):
                c["fluency"] = values["fluency"]
                c["fluency_ok"] = values["fluency_ok"]
        fluent = [c for c in crossed if c["fluency_ok"]][:MAX_VERIFY]
        if fluent:
            replies = subject.generate([c["variant"] for c in fluent], 24)
            for c, reply, verdict in zip(fluent, replies, judge.verdicts(replies), strict=True):
                c["flipped"] = goal.succeeded(verdict.refusal)
                c["response"] = reply
        records.append({
            "id": prompt.id, "target": target, "original": prompt.prompt,
            "positions": plan.keys, "seconds": time.perf_counter() - started,
            "candidates": candidates,
        })  # fmt: skip
        out.write_text(json.dumps({"model": label, "prompts": records}, indent=0))
    print(f"wrote {out}")


# ------------------------------------------------------------------ offline replay


def _gradient(c: dict, w: float) -> float:
    return c["estimate"] if c["estimate"] is not None else -np.inf


def _prior(c: dict, w: float) -> float:
    return c["prior"] if c["prior"] is not None else -np.inf


def _gradient_and_prior(c: dict, w: float) -> float:
    return _gradient(c, w) + w * _prior(c, w)


def _random(c: dict, w: float) -> float:
    return random.Random(f"{c['position']} {c['word']}").random()


def _exact(c: dict, w: float) -> float:
    return c["progress"]


RANKERS = {  # name: (score, weights tried); higher scores are scored exactly first
    "gradient": (_gradient, (0.0,)),
    "lm prior": (_prior, (0.0,)),
    "gradient + w * lm prior": (_gradient_and_prior, (0.03, 0.1, 0.3, 0.5, 1.0)),
    "random": (_random, (0.0,)),
    "exact margin (oracle)": (_exact, (0.0,)),
}


WIDTHS = (  # (scope, m) replayed; m is a percentage for "share", a word count otherwise
    *(("position", m) for m in (6, 20, 30)),
    *(("best position", m) for m in (6, 20)),
    *(("share", m) for m in (5, 8)),
    *(("global", m) for m in (6, 20)),
)


def replay(prompt: dict, score, scope: str, m: int, budget: int) -> tuple[bool, int]:
    """(success, queries) of a search over this prompt's candidates under ``score``.

    ``scope`` "position": positions in the attack's order, the best ``m`` words of each;
    "best position": the same, positions ordered by their best candidate's score; "share":
    positions in the attack's order, the best ``m`` percent of each position's words (at least
    10), so wide positions (verbs, nouns: ~800 words) get more than narrow ones (articles: ~5);
    "global": all (position, word) candidates best first, ``m`` at a time. Stops at the first
    group holding a verified flip, or once ``budget`` queries are spent."""
    candidates = prompt["candidates"]
    if scope != "global":
        groups = [
            sorted((c for c in candidates if c["order"] == k), key=score, reverse=True)
            for k in range(len(prompt["positions"]))
        ]
        groups = [
            g[: max(10, math.ceil(m / 100 * len(g))) if scope == "share" else m] for g in groups
        ]
        if scope == "best position":
            groups.sort(key=lambda g: score(g[0]) if g else -np.inf, reverse=True)
    else:
        ranked = sorted(candidates, key=score, reverse=True)
        groups = [ranked[i : i + m] for i in range(0, len(ranked), m)]
    queries = 0
    for group in groups:
        queries += len(group)
        if any(c.get("flipped") for c in group):
            return True, queries
        if queries >= budget:
            break
    return False, queries


def first_flip_rank(prompt: dict, score) -> float:
    """Where the best-ranked verified flip falls among the prompt's candidates (0 = first)."""
    ranked = sorted(prompt["candidates"], key=score, reverse=True)
    first = next(i for i, c in enumerate(ranked) if c.get("flipped"))
    return first / len(ranked)


def in_scope(prompt: dict) -> dict:
    """The prompt without candidates that swap a quantifier or negation in or out: the
    content constraint's rule since 2026-12-05, applied to dumps written before it."""
    from probe.attack.constraints import changes_scope
    from probe.words import split_words

    words = [w.text for w in split_words(prompt["original"])]
    kept = [c for c in prompt["candidates"] if not changes_scope(words[c["position"]], c["word"])]
    return {**prompt, "candidates": kept}


def list_flips(prompts: list[dict], ratings: Path) -> None:
    """Each query's verified fluent flips, best margin first, with the rater's verdicts
    ("unrated" where the file has none); then per direction, how many queries have a flip
    rated the same request, and one rated grammatical, natural and the same request."""
    from probe.words import split_words

    with ratings.open(newline="") as handle:
        rated = {
            (r["id"], int(r["position"]), r["new_word"]): r
            for r in csv.DictReader(handle, delimiter="\t")
            if r["kind"] == "substitution"
        }
    same: set[str] = set()
    acceptable: set[str] = set()
    unrated: set[str] = set()
    for prompt in prompts:
        flips = sorted(
            (c for c in prompt["candidates"] if c.get("flipped")), key=lambda c: -c["progress"]
        )
        if not flips:
            continue
        words = [w.text for w in split_words(prompt["original"])]
        print(f"{prompt['id']} (toward {prompt['target']}): {prompt['original']}")
        for c in flips:
            row = rated.get((prompt["id"], c["position"], c["word"]))
            if row is None:
                unrated.add(prompt["id"])
                verdicts = "unrated"
            else:
                keys = ("grammatical", "natural", "same_request")
                verdicts = " ".join(f"{k}={row[k]}" for k in keys)
                if row["same_request"] == "1":
                    same.add(prompt["id"])
                    if row["grammatical"] == "1" and row["natural"] == "1":
                        acceptable.add(prompt["id"])
            print(f"    {words[c['position']]} -> {c['word']}  {verdicts}")
    for target in ("compliance", "refusal"):
        ids = {p["id"] for p in prompts if p["target"] == target}
        print(
            f"toward {target}: of {len(ids)} attacked queries, {len(same & ids)} have a flip "
            f"rated the same request, {len(acceptable & ids)} one rated grammatical, natural and "
            f"the same request ({len(unrated & ids)} with unrated flips)"
        )


def study_ids(n: int) -> set[str]:
    """The ids of the study's seeded ``n`` unsafe + ``n`` safe test queries (needs ../shared)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import vlguard_smollm2 as study

    return {p.id for p in study.study_prompts(n, n, 0)[0]}


def analyze(paths: list[Path], ratings: Path | None = None, study: int | None = None) -> None:
    files = [json.loads(path.read_text()) for path in paths]
    dumped = [p for f in files for p in f["prompts"]]
    if study is not None:
        kept = study_ids(study)
        dumped = [p for p in dumped if p["id"] in kept]
    prompts = [in_scope(p) for p in dumped]
    dropped = sum(len(p["candidates"]) for p in dumped) - sum(len(p["candidates"]) for p in prompts)
    print(f"candidates swapping a quantifier or negation, dropped: {dropped}")
    flippable = [p for p in prompts if any(c.get("flipped") for c in p["candidates"])]
    total = sum(len(p["candidates"]) for p in prompts)
    print(
        f"model: {files[0]['model']}; attacked: {len(prompts)}; candidates: {total} "
        f"({total / max(1, len(prompts)):.0f} per prompt); exhaustive successes (verified, "
        f"fluent flips): {len(flippable)} ({sum(p['target'] == 'compliance' for p in flippable)} "
        "toward compliance)"
    )
    for target in ("compliance", "refusal"):
        attacked = [p for p in prompts if p["target"] == target]
        flipped = sum(p in flippable for p in attacked)
        low, high = wilson_interval(flipped, len(attacked))
        print(
            f"toward {target}: {flipped}/{len(attacked)} attacked queries have a verified, "
            f"fluent one-word flip in the space, {flipped / max(1, len(attacked)):.1%} "
            f"[{low:.0%}, {high:.0%}]"
        )
    if ratings is not None:
        list_flips(prompts, ratings)
        return
    print(f"{'ranker':<26} {'w':>5} {'median first-flip rank':>23} {'within 10%':>11}")
    for name, (fn, weights) in RANKERS.items():
        for w in weights:
            ranks = [first_flip_rank(p, functools.partial(fn, w=w)) for p in flippable]
            within = sum(r <= 0.1 for r in ranks)
            median = float(np.median(ranks)) if ranks else float("nan")
            print(f"{name:<26} {w:>5} {median:>23.1%} {within:>6}/{len(ranks)}")
    print(f"\n{'ranker':<26} {'w':>5} {'scope':>13} {'m':>4} {'budget':>7} {'found':>6} "
          f"{'share':>6} {'queries':>8} {'q share':>8}")  # fmt: skip
    for name, (fn, weights) in RANKERS.items():
        for w, (scope, m), budget in itertools.product(weights, WIDTHS, (40, 100, 200, 400)):
            score = functools.partial(fn, w=w)
            results = [replay(p, score, scope, m, budget) for p in prompts]
            found = sum(ok for ok, _ in results)
            queries = sum(q for _, q in results)
            print(
                f"{name:<26} {w:>5} {scope:>13} {m:>4} {budget:>7} {found:>6} "
                f"{found / max(1, len(flippable)):>6.0%} {queries:>8} {queries / total:>8.1%}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smollm2", type=int, metavar="N", help="N unsafe + N safe queries")
    parser.add_argument("--out", type=Path, help="write the candidates here (JSON)")
    parser.add_argument("--analyze", type=Path, nargs="+", help="replay rankers over written files")
    parser.add_argument(
        "--list-flips", type=Path, metavar="RATINGS", help="with --analyze: list the flips"
    )
    parser.add_argument(
        "--study", type=int, metavar="N", help="with --analyze: only the study's N + N queries"
    )
    parser.add_argument("--shard", default="0/1", help="K/N: attacked prompts K, K+N, ...")
    parser.add_argument("--skip", type=Path, nargs="*", default=[], help="files of done prompts")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.analyze:
        analyze(args.analyze, args.list_flips, args.study)
    elif args.smollm2 and args.out:
        k, n = (int(x) for x in args.shard.split("/"))
        done = frozenset(
            p["id"] for path in args.skip for p in json.loads(path.read_text())["prompts"]
        )
        dump(args.smollm2, args.out, (k, n), done)
    else:
        parser.error("give --smollm2 N --out FILE, or --analyze FILE")


if __name__ == "__main__":
    main()
