"""``probe compare`` and ``probe attack --replay``: argument parsers and handlers.

``probe.cli`` registers them (``add_compare_parser``, ``add_replay_option``,
``attack_or_replay``) so this package owns its commands.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from probe.errors import ProbeError

if TYPE_CHECKING:
    from probe.report.records import RunSummary


def add_compare_parser(commands) -> argparse.ArgumentParser:
    """Add ``probe compare RUN_A RUN_B [RUN_C ...] --out DIR`` to the subcommands."""
    from probe.compare.compare import DEFAULT_MIN_EFFECT

    parser = commands.add_parser(
        "compare", help="compare run directories of the same prompts on different checkpoints"
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (two or more)")
    parser.add_argument("--out", required=True, help="comparison folder to write")
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help="the model of each run, in order ('-' to skip one): replays every run's verified "
        "edits on its own and each later run's model ('demo', 'demo-balanced', a folder or a "
        "hub id)",
    )
    parser.add_argument("--words", nargs="+", default=[], help="extra words to compare")
    parser.add_argument("--top-k", type=int, default=10, help="top triggers per run and direction")
    parser.add_argument(
        "--min-effect",
        type=float,
        default=DEFAULT_MIN_EFFECT,
        help=f"smallest |effect| for a trigger (default {DEFAULT_MIN_EFFECT})",
    )
    parser.add_argument("--data-cues", help="data cue lexicon to compare every run with")
    parser.add_argument("--heatmaps", type=int, default=6, help="prompts shown per pair")
    _replay_model_options(parser)
    return parser


def _replay_model_options(parser: argparse.ArgumentParser, *, attack: bool = False) -> None:
    """Options for loading the replay model(s); the attack parser already has most of them."""
    if not attack:
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--dtype", default="auto")
        parser.add_argument("--batch-size", type=int, default=16)
        parser.add_argument("--threads", type=int)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--max-new-tokens", type=int, help="default: the run's own setting")
    parser.add_argument(
        "--all-edits",
        action="store_true",
        help="replay every verified edit, not only the flips (the proofs)",
    )


def add_replay_option(attack: argparse.ArgumentParser) -> None:
    """Add ``--replay RUN/attacks.jsonl`` to ``probe attack``; with it, --lexicon is not
    needed (the handler checks it otherwise)."""
    attack.add_argument(
        "--replay",
        help="re-score and re-generate another run's verified edits (its attacks.jsonl) on "
        "--model instead of searching; writes the replayed edits to --out",
    )
    _replay_model_options(attack, attack=True)
    for action in attack._actions:
        if action.dest == "lexicon":
            action.required = False


def attack_or_replay(search: Callable[[argparse.Namespace], None]):
    """The ``probe attack`` handler: replay with --replay, else ``search`` (the ordinary attack),
    which needs --lexicon."""

    def handler(args: argparse.Namespace) -> None:
        if getattr(args, "replay", None):
            cmd_replay(args)
            return
        if getattr(args, "lexicon", None) is None:
            raise ProbeError("probe attack needs --lexicon FILE (or --replay FILE)")
        search(args)

    return handler


def load_model(name: str, args: argparse.Namespace):
    """A Subject for ``name``: a built-in demo ('demo', 'demo-balanced', 'demo-vlm'), a folder,
    a GGUF file or a hub id, with the command's device/dtype/batch options."""
    from probe.audit import AuditConfig, load_subject

    seed = getattr(args, "seed", 0) or 0
    config = AuditConfig(
        model=name,
        seed=seed,
        device=getattr(args, "device", "cpu"),
        dtype=getattr(args, "dtype", "auto"),
        batch_size=getattr(args, "batch_size", 16),
        threads=getattr(args, "threads", None),
        gguf_file=getattr(args, "gguf_file", None),
        trust_remote_code=bool(getattr(args, "trust_remote_code", False)),
    )
    return load_subject(config)


def _apply_run_calibration(subject, summary: RunSummary) -> None:
    """Score margins with the openings the model's own audit calibrated, when known."""
    from probe.subject.margin import MarginConfig

    calibration = summary.calibration
    if calibration and calibration.refusal_openings and calibration.compliance_openings:
        subject.margin_config = MarginConfig(
            tuple(calibration.refusal_openings),
            tuple(calibration.compliance_openings),
            calibration.source or "run",
        )


def cmd_replay(args: argparse.Namespace) -> None:
    """``probe attack --replay RUN_A/attacks.jsonl --model B --out FILE``."""
    from probe.compare.replay import read_edits, replay_edits
    from probe.judge import RefusalJudge
    from probe.rundir import read_jsonl, write_jsonl

    source, out = Path(args.replay), Path(args.out)
    if not source.is_file():
        raise ProbeError(f"replay file not found: {source}")
    if out.resolve() == source.resolve():
        raise ProbeError("--out must not be the replayed attacks file")
    records = read_edits(read_jsonl(source), str(source))
    subject = load_model(args.model, args)
    result = replay_edits(
        records,
        subject,
        RefusalJudge.default(),
        max_new_tokens=args.max_new_tokens,
        proofs_only=not args.all_edits,
        source=str(source),
        model=args.model,
    )
    write_jsonl(out, (r.to_record() for r in result.records))
    summary = result.summary()
    print(json.dumps({k: summary[k] for k in ("proofs", "applicable", "still_flip")}))
    print(f"probe: {len(result.records)} replayed edits written to {out}")


def cmd_compare(args: argparse.Namespace) -> None:
    """``probe compare RUN_A RUN_B ... --out DIR [--models ...]``."""
    from probe.compare.compare import compare_runs
    from probe.compare.output import prepare_out_dir, write_comparison
    from probe.compare.replay import read_edits, replay_edits
    from probe.compare.runs import load_run
    from probe.judge import RefusalJudge
    from probe.lexicon.table import TriggerLexicon

    if len(args.runs) < 2:
        raise ProbeError("compare needs at least two run directories")
    for name in ("top_k", "heatmaps"):
        if getattr(args, name) < 0 or (name == "top_k" and args.top_k < 1):
            raise ProbeError(f"--{name.replace('_', '-')} must be positive")
    if args.models and len(args.models) != len(args.runs):
        raise ProbeError(
            f"--models needs one model per run ({len(args.runs)}), got {len(args.models)}"
        )
    runs = [load_run(path) for path in args.runs]
    prepare_out_dir(args.out, args.runs)
    cues = TriggerLexicon.from_json(args.data_cues) if args.data_cues else None
    replays = {}
    if args.models:
        judge = RefusalJudge.default()
        for j, model in enumerate(args.models):
            # Every earlier run's proofs, and the run's own (a reproducibility check).
            sources = [i for i in range(j + 1) if runs[i].attacks]
            if model == "-" or not sources:
                continue
            subject = load_model(model, args)
            _apply_run_calibration(subject, runs[j].summary)
            for i in sources:
                records = read_edits(
                    [edit.to_record() for edit in runs[i].attacks or []],
                    str(runs[i].path / "attacks.jsonl"),
                )
                tokens = args.max_new_tokens or (runs[i].summary.config.get("max_new_tokens") or 24)
                replays[(i, j)] = replay_edits(
                    records,
                    subject,
                    judge,
                    max_new_tokens=tokens,
                    proofs_only=not args.all_edits,
                    source=runs[i].name,
                    model=model,
                )
            del subject
    comparison = compare_runs(
        runs,
        words=args.words,
        top_k=args.top_k,
        min_effect=args.min_effect,
        data_cues=cues,
        replays=replays,
        n_heatmaps=args.heatmaps,
        seed=args.seed,
    )
    folder = write_comparison(comparison, args.out, replays)
    print(f"probe: comparison written to {folder / 'report.html'}")
