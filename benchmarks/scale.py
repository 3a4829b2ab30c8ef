"""Scale-out and memory of `probe audit`: 1 vs 2 processes, and peak RSS vs the prompt count.

Wall time: the same audit of N demo prompts as one process and under ``torchrun
--nproc-per-node 2`` (gloo on CPU), run in turn (1, 2, 1, 2, ...) so that the ratio is taken
pair by pair on a machine whose speed drifts. Memory: the peak RSS of a one-process audit of
200 and of 2,000 prompts (the demo's held-out prompts, repeated with fresh ids to reach the
count). Each run is a fresh process measured from outside (``os.wait4``: wall clock and the
kernel's peak RSS of the largest process). The lexicon fit's own peak memory (tracemalloc, after
the language data are loaded) is measured on each RSS run's attributions. Optional: the tuned
SmolLM2 model on 40 prompts.

    python benchmarks/scale.py --pairs 2 --prompts 200 --rss 200,2000
    python benchmarks/scale.py --pairs 1 --prompts 40 --rss "" \\
        --smollm2 ~/.cache/probe/smollm2-vlguard-... --source ../shared/data/vlguard/test.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from probe.data import Prompt, save_prompts
from probe.demos.text import demo_prompts


def prompt_file(folder: Path, count: int) -> Path:
    """``count`` demo prompts (held-out ones, repeated under new ids when there are too few)."""
    base = demo_prompts(0, per_group=20)
    prompts = [
        Prompt(p.prompt, f"{p.id}-r{i // len(base)}", p.label)
        for i, p in ((i, base[i % len(base)]) for i in range(count))
    ]
    path = folder / f"prompts-{count}.jsonl"
    save_prompts(prompts, path)
    return path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB of the largest process) of one run; fails loudly."""
    started = time.monotonic()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"failed ({child.returncode}): {' '.join(command)}\n{child.stderr.read()}")
    return wall, usage.ru_maxrss / 1024


def fit_peak_mib(attributions: Path) -> float:
    """Peak traced memory (MiB) of ``LexiconBuilder.fit`` on a run's attributions."""
    import tracemalloc

    from probe.attribution.base import WordAttribution
    from probe.lexicon.builder import LexiconBuilder
    from probe.rundir import read_jsonl

    records = [WordAttribution.from_record(r) for r in read_jsonl(attributions)]
    LexiconBuilder().fit(records[:20])  # the tagger and WordNet load outside the measurement
    tracemalloc.start()
    try:
        LexiconBuilder().fit(records)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def audit(
    processes: int, prompts: Path, out: Path, model: str, threads: int, extra: tuple = ()
) -> list[str]:
    launcher = [sys.executable]
    if processes > 1:
        launcher += [
            "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
            "--master-addr", "127.0.0.1", "--master-port", str(_port()),
        ]  # fmt: skip
    return [
        *launcher, "-m", "probe.cli", "audit", "--model", model, "--prompts", str(prompts),
        "--out", str(out), "--threads", str(threads), *extra,
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="1-vs-2-process pairs (0: none)")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--rss", default="200,2000", help="prompt counts for peak RSS ('' skips)")
    parser.add_argument("--smollm2", help="a tuned SmolLM2 folder: time it instead of the demo")
    parser.add_argument(
        "--source", help="a prompt file to take the first --prompts (label-balanced) from"
    )
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="0")
    model = args.smollm2 or "demo"
    rows = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": model,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        extra: tuple = ()
        if args.source:  # the user's prompts, a label-balanced head of them
            prompts, extra = Path(args.source), ("--max-prompts", str(args.prompts))
            rows["prompts"] = f"{args.source}, first {args.prompts} (label-balanced)"
            warm = (prompts, ("--max-prompts", "16"))
        else:
            prompts = prompt_file(folder, args.prompts)
            warm = (prompt_file(folder, 16), ())
        timed(audit(1, warm[0], folder / "warm", model, 1, warm[1]), env)  # caches built
        one, two = [], []
        for pair in range(args.pairs):
            one.append(timed(audit(1, prompts, folder / f"one-{pair}", model, 1, extra), env)[0])
            two.append(timed(audit(2, prompts, folder / f"two-{pair}", model, 1, extra), env)[0])
        if args.pairs:
            ratios = [a / b for a, b in zip(one, two, strict=True)]
            rows[f"wall_s_1_process_{args.prompts}_prompts"] = [round(t, 1) for t in one]
            rows[f"wall_s_2_processes_{args.prompts}_prompts"] = [round(t, 1) for t in two]
            rows["speedup_median"] = round(statistics.median(ratios), 2)
            for name, run in (("1_process", "one-0"), ("2_processes", "two-0")):
                summary = json.loads((folder / run / "summary.json").read_text())
                rows[f"stage_s_{name}"] = summary["timings_s"]
                rows[f"rank_busy_s_{name}"] = summary.get("rank_busy_s")
        for count in [int(c) for c in args.rss.split(",") if c.strip()]:
            wall, peak = timed(
                audit(1, prompt_file(folder, count), folder / f"rss-{count}", model, 1), env
            )
            rows[f"peak_rss_mib_{count}_prompts"] = round(peak, 1)
            rows[f"wall_s_{count}_prompts"] = round(wall, 1)
            fit = fit_peak_mib(folder / f"rss-{count}" / "attributions.jsonl")
            rows[f"lexicon_fit_peak_mib_{count}_prompts"] = round(fit, 1)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
