"""Attack efficiency: probe's guided one-word search vs exhaustive search, same candidate space.

Exhaustive scores every candidate edit at every position (every lexicon trigger, synonym,
deletion, and every real one-token English word the gradient-guided source would rank), under
the same constraints, then verifies the crossing ones in margin order until one flips (up to
1000 verifications): the most a one-word search over this space can find. Guided walks
positions most-decisive first, proposes only the gradient's top words, and stops at the first
verified flip under a query budget. A query is one margin evaluation, one generation, or one
gradient pass. Also prints the guided run's metrics with all constraints and with none, and
each search's seconds per attacked prompt (same run, same process, one after another).

    python benchmarks/attack_efficiency.py [--model demo] [--prompts FILE --format F]
    python benchmarks/attack_efficiency.py --smollm2 N   # N unsafe + N safe VLGuard test queries

``--smollm2`` uses the VLGuard-tuned SmolLM2 of benchmarks/vlguard_smollm2.py when it is built
(never builds it) and the SmolLM2-135M-Instruct GGUF as shipped otherwise; the table says which.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from probe.attack import OneWordAttack
from probe.attack.recipes.thorough import thorough_attack
from probe.attribution import get_attributor
from probe.audit import AuditConfig, load_audit_prompts, load_subject
from probe.judge import RefusalJudge
from probe.lexicon.builder import LexiconBuilder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--prompts")
    parser.add_argument("--format")
    parser.add_argument("--max-prompts", type=int)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--demo-per-group", type=int, help="demo prompts per group (default 16)")
    parser.add_argument("--smollm2", type=int, metavar="N", help="SmolLM2 on N+N VLGuard queries")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--records", help="write every search's verified edits here (JSON)")
    parser.add_argument(
        "--searches",
        default="exhaustive,guided,unconstrained",
        help="which of exhaustive, guided, unconstrained, thorough to run (comma-separated)",
    )
    parser.add_argument("--max-queries", type=int, default=40, help="guided margin budget")
    parser.add_argument("--per-position", type=int, default=6, help="guided words per position")
    parser.add_argument("--max-verify", type=int, default=3, help="guided generations per prompt")
    parser.add_argument(
        "--admissible",
        action="store_true",
        help="guided words: the best that pass the constraints (recipes/thorough.py)",
    )
    args = parser.parse_args()
    config = AuditConfig(
        model=args.model,
        prompts=args.prompts,
        format=args.format,
        max_prompts=args.max_prompts,
        max_new_tokens=args.max_new_tokens,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smollm2:
        subject, prompts, args.model = smollm2_setup(args.smollm2)
    else:
        subject = load_subject(config)
        prompts = load_audit_prompts(config)
    if args.demo_per_group and args.model == "demo" and not args.prompts:
        from probe.demos.text import demo_prompts

        prompts = demo_prompts(0, per_group=args.demo_per_group)
    judge = RefusalJudge.default()
    responses = subject.generate([p.prompt for p in prompts], config.max_new_tokens)
    refused = {p.id: judge.is_refusal(r) for p, r in zip(prompts, responses, strict=True)}
    attributions = get_attributor("occlusion").attribute(subject, prompts)
    lexicon = LexiconBuilder().fit(attributions).lexicon_

    guided = {
        "max_new_tokens": config.max_new_tokens,
        "max_queries": args.max_queries,
        "guided_per_position": args.per_position,
        "max_verify": args.max_verify,
        "guided_admissible": args.admissible,
    }
    searches = {
        "exhaustive": OneWordAttack(
            search="exhaustive", max_verify=1000, max_new_tokens=config.max_new_tokens
        ),
        "guided": OneWordAttack(**guided),
        "unconstrained": OneWordAttack(**guided, constraints=()),
        "thorough": thorough_attack(max_new_tokens=config.max_new_tokens),
    }
    rows = []
    for name in args.searches.split(","):
        started = time.perf_counter()
        result = searches[name].run(subject, judge, lexicon, prompts, attributions, refused)
        rows.append((name, result, time.perf_counter() - started))
    if args.records:
        Path(args.records).write_text(
            json.dumps({n: [r.to_record() for r in res.records] for n, res, _ in rows}, indent=1)
        )

    print(f"model: {args.model}; prompts: {len(prompts)}; attacked: {len(rows[0][1].attacked)}")
    print("constraints: content, pos, fluency on, except in 'unconstrained'; guided:", guided)
    print(
        f"{'search':<16} {'ASR':>6} {'over-ref':>9} {'successes':>10} {'queries':>8} "
        f"{'q/success':>10} {'seconds':>8} {'s/prompt':>9}"
    )
    for name, result, seconds in rows:
        qps = result.queries_per_success
        print(
            f"{name:<16} {result.rate('compliance') or 0:>6.3f} "
            f"{result.rate('refusal') or 0:>9.3f} {len(result.flipped_ids):>10} "
            f"{result.queries:>8} {qps if qps is not None else float('nan'):>10.2f} "
            f"{seconds:>8.1f} {seconds / max(1, len(result.attacked)):>9.2f}"
        )
    by_name = {name: result for name, result, _ in rows}
    exhaustive = by_name.get("exhaustive")
    for name in ("guided", "thorough"):
        if exhaustive is None or name not in by_name or not exhaustive.flipped_ids:
            continue
        found = by_name[name]
        share = len(found.flipped_ids & exhaustive.flipped_ids) / len(exhaustive.flipped_ids)
        print(
            f"{name} finds {share:.1%} of exhaustive's successes with "
            f"{found.queries / exhaustive.queries:.1%} of its queries"
        )
    for name, result, _ in rows:
        if name == "exhaustive":
            continue
        metrics = result.metrics()
        keep = ("asr", "over_refusal", "flip_share_by_constraint_level")
        print(name, json.dumps({k: metrics[k] for k in keep}, default=str))


def smollm2_setup(n: int):
    """(subject, prompts, model label): the tuned SmolLM2 if built, else the shipped GGUF, and
    the study's seeded sample of ``n`` unsafe + ``n`` safe VLGuard test queries."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import vlguard_smollm2 as study

    prompts, _, _ = study.study_prompts(n, n, 0)
    if (study.tuned_dir(0) / "probe_study.json").is_file():
        return study.load_tuned_subject(0), prompts, "smollm2-vlguard (tuned)"
    return study.load_base_subject(), prompts, "smollm2 (as shipped)"


if __name__ == "__main__":
    main()
