"""Command line: ``probe audit | attribute | lexicon | attack | report | judge | compare``.

The commands and their options are the contract the README's "Audit your own model" states.

Bad input ends with one line on stderr and a non-zero exit; an interrupted run keeps what it
already wrote and says where.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from probe.compare.cli import add_compare_parser, add_replay_option, attack_or_replay, cmd_compare
from probe.errors import ProbeError
from probe.judge import cli as judge_cli
from probe.parallel import is_main_process

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="demo",
        help="'demo', 'demo-vlm', a local folder, a .gguf file or a hub id (default: demo)",
    )
    parser.add_argument("--gguf-file", help="GGUF file name inside --model's folder")
    parser.add_argument("--chat-template", help="Jinja chat template file for models without one")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model's own code to run (off by default)",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load pickle weights (pytorch_model.bin), which can run code: only ones you trust",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    parser.add_argument(
        "--device-map", help="'auto' spreads a model too large for one device (accelerate)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, help="CPU threads for torch (default: 1 for tiny models, else all)"
    )
    parser.add_argument(
        "--dist-timeout",
        type=int,
        help="seconds a process of a multi-process run waits for the others before it stops "
        "(default 7200)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=24,
        help="greedy tokens generated to verify a decision",
    )
    parser.add_argument(
        "--refusal-openings",
        help="margin refusal openings: comma-separated, or an openings JSON file "
        "(default: calibrated from the model's own responses)",
    )
    parser.add_argument(
        "--compliance-openings", help="margin compliance openings (as --refusal-openings)"
    )


def _prompt_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--prompts", required=required, help="JSONL/CSV prompt file or a public set"
    )
    parser.add_argument("--format", help="jsonl, csv, vlguard, xstest, advbench or figstep")
    parser.add_argument("--max-prompts", type=int, help="audit at most N prompts (label-balanced)")
    parser.add_argument(
        "--allow-outside-images",
        action="store_true",
        help="read image paths that lead outside the prompt file's folder",
    )
    parser.add_argument(
        "--judge",
        default="combined",
        choices=("keyword", "classifier", "combined"),
        help="refusal judge (default: combined = keywords or the classifier)",
    )
    parser.add_argument("--judge-weights", help="classifier weights from `probe judge fit`")


def _method_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="occlusion", help="attribution method")
    parser.add_argument("--ig-steps", type=int, help="integrated-gradients steps")
    parser.add_argument("--shapley-samples", type=int, help="shapley permutations per prompt")
    parser.add_argument("--lime-samples", type=int, help="lime samples per prompt")


def _attack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-queries", type=int, default=40, help="attack budget per prompt (margin queries)"
    )
    parser.add_argument(
        "--top-k-triggers", type=int, default=5, help="lexicon triggers tried per direction"
    )
    parser.add_argument("--edit-kinds", help="comma-separated: substitution, insertion, deletion")
    parser.add_argument(
        "--attack-recipe",
        choices=("default", "thorough"),
        help="default; or thorough: then a wider search (200 queries) where the default failed",
    )


def _run_options(parser: argparse.ArgumentParser) -> None:
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--fresh", action="store_true", help="discard a previous run in --out and start over"
    )
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (the default when --out holds one with the same "
        "settings); fail if there is none",
    )


def _add_audit(commands) -> None:
    audit = commands.add_parser("audit", help="full audit into a run directory")
    _model_options(audit)
    _prompt_options(audit, required=False)
    audit.add_argument("--out", default="probe-report", help="run directory (default probe-report)")
    _method_options(audit)
    _attack_options(audit)
    audit.add_argument(
        "--data-cues",
        help="data cue lexicon to compare with (a file from `probe lexicon --dataset`, or a "
        "shipped one by name, e.g. vlguard_cues)",
    )
    _run_options(audit)


def _add_attribute(commands) -> None:
    attribute = commands.add_parser("attribute", help="word attributions to a JSONL file")
    _model_options(attribute)
    _prompt_options(attribute, required=False)
    attribute.add_argument("--out", required=True, help="attributions .jsonl")
    _method_options(attribute)
    _run_options(attribute)


def _add_lexicon(commands) -> None:
    lexicon = commands.add_parser("lexicon", help="trigger lexicon from attributions or data")
    source = lexicon.add_mutually_exclusive_group(required=True)
    source.add_argument("--attributions", help="attributions.jsonl from probe attribute/audit")
    source.add_argument("--dataset", help="labelled fine-tuning set, for data-level cues")
    lexicon.add_argument("--format", help="dataset format: vlguard, jsonl or csv")
    lexicon.add_argument(
        "--view",
        default="any",
        choices=("any", "first"),
        help="data cues: any position or first word only",
    )
    lexicon.add_argument(
        "--min-support", type=int, help="leave out rarer words (default: 3 model, 5 data)"
    )
    lexicon.add_argument("--seed", type=int, default=0)
    lexicon.add_argument(
        "--out", required=True, help="lexicon .json, with the .csv beside it (or give the .csv)"
    )


def _add_attack(commands) -> None:
    attack = commands.add_parser("attack", help="one-word attack with a lexicon's triggers")
    _model_options(attack)
    _prompt_options(attack, required=False)
    attack.add_argument("--lexicon", required=True)
    attack.add_argument("--out", required=True, help="verified edits .jsonl")
    _method_options(attack)
    _attack_options(attack)
    _run_options(attack)

    add_replay_option(attack)


def _add_report(commands) -> None:
    report = commands.add_parser("report", help="re-render report.md/html from a run directory")
    report.add_argument("run_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probe", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_audit, _add_attribute, _add_lexicon, _add_attack, _add_report):
        add(commands)
    judge_cli.add_parser(commands)
    add_compare_parser(commands)
    return parser


def _config(args: argparse.Namespace, **overrides):
    from probe.audit import AuditConfig

    names = AuditConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return AuditConfig(**{**values, **overrides})


def _positive(args: argparse.Namespace) -> None:
    for name in (
        "batch_size", "max_new_tokens", "max_prompts", "min_support", "threads", "max_queries",
        "top_k_triggers", "ig_steps", "shapley_samples", "lime_samples", "dist_timeout",
    ):  # fmt: skip
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ProbeError(f"--{name.replace('_', '-')} must be at least 1")


def _cmd_audit(args: argparse.Namespace) -> None:
    from probe.audit import run_audit

    run_dir = run_audit(_config(args))
    if is_main_process():
        print(f"probe: report written to {run_dir / 'report.html'}")


def _cmd_attribute(args: argparse.Namespace) -> None:
    from probe.audit import run_attribute

    count = run_attribute(_config(args, out="-"), args.out)
    if is_main_process():
        print(f"probe: {count} attributions written to {args.out}")


def lexicon_paths(out: Path) -> tuple[Path, Path]:
    """(JSON, CSV) paths for ``probe lexicon --out``: a .csv names the CSV, else the JSON."""
    if out.suffix.lower() == ".csv":
        return out.with_suffix(".json"), out
    return out, out.with_name(out.stem + ".csv") if out.suffix else out.with_name(out.name + ".csv")


def _lexicon_owned(json_path: Path, csv_path: Path) -> None:
    """Refuse to replace existing files that are not probe lexicons."""
    if json_path.exists():
        try:
            if "entries" not in json.loads(json_path.read_text(encoding="utf-8")):
                raise ValueError
        except (ValueError, TypeError, OSError, UnicodeDecodeError):
            raise ProbeError(
                f"{json_path} exists and is not a probe lexicon; choose another --out"
            ) from None
    if csv_path.exists():
        try:
            with open(csv_path, encoding="utf-8") as handle:
                header = handle.readline()
        except (OSError, UnicodeDecodeError):
            header = ""
        if not header.startswith("word,direction"):
            raise ProbeError(f"{csv_path} exists and is not a probe lexicon; choose another --out")


def _cmd_lexicon(args: argparse.Namespace) -> None:
    from probe.rundir import check_output, write_lexicon_files

    json_path, csv_path = lexicon_paths(Path(args.out))
    source = args.attributions or args.dataset
    for path in (json_path, csv_path):
        check_output(path, [source], "lexicon output")
    _lexicon_owned(json_path, csv_path)
    if args.attributions:
        from probe.attribution import WordAttribution
        from probe.lexicon.builder import LexiconBuilder
        from probe.rundir import read_jsonl

        path = Path(args.attributions)
        if not path.is_file():
            raise ProbeError(f"attributions file not found: {path}")
        records = [WordAttribution.from_record(r) for r in read_jsonl(path)]
        if not records:
            raise ProbeError(f"attributions file {path} is empty")
        params = {"min_support": args.min_support} if args.min_support else {}
        lexicon = LexiconBuilder(seed=args.seed, **params).fit(records).lexicon_
    else:
        from probe.lexicon.cues import mine_dataset

        params = {"min_count": args.min_support} if args.min_support else {}
        lexicon = mine_dataset(args.dataset, args.format, view=args.view, **params)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_lexicon_files(lexicon, json_path, csv_path)
    print(f"probe: {len(lexicon.entries)} lexicon entries written to {json_path} and {csv_path}")


def _cmd_attack(args: argparse.Namespace) -> None:
    from probe.audit import run_attack

    if not Path(args.lexicon).is_file():
        raise ProbeError(f"lexicon file not found: {args.lexicon}")
    result = run_attack(_config(args, out="-"), args.lexicon, args.out)
    if not is_main_process():
        return
    print(
        json.dumps(
            {
                "asr_one_word": result.rate("compliance"),
                "over_refusal_one_word": result.rate("refusal"),
                "queries_per_success": result.queries_per_success,
            }
        )
    )
    print(f"probe: {len(result.records)} verified edits written to {args.out}")


def _cmd_report(args: argparse.Namespace) -> None:
    from probe.report import render_report

    print(f"probe: report written to {render_report(args.run_dir)}")


COMMANDS = {
    "audit": _cmd_audit,
    "attribute": _cmd_attribute,
    "lexicon": _cmd_lexicon,
    "attack": attack_or_replay(_cmd_attack),
    "report": _cmd_report,
    "judge": judge_cli.handle,
    "compare": cmd_compare,
}


def _stopped_message(args: argparse.Namespace, exc: KeyboardInterrupt) -> str:
    """What an interrupted command kept, and how to continue: only what is true."""
    from probe.audit import RunStopped

    how = f"stopped by {exc.signal_name}" if isinstance(exc, RunStopped) else "interrupted"
    out = getattr(args, "out", None)
    if args.command in ("audit", "attribute", "attack") and out:
        return (
            f"probe: {how}; the records written so far are kept in {out}; "
            "rerun the same command to resume"
        )
    return f"probe: {how}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _positive(args)
        COMMANDS[args.command](args)
    except ProbeError as exc:
        print(f"probe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        # The run has already saved its status; a further Ctrl-C while probe says so and exits
        # (an impatient second press) must not kill it mid-message or print a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(_stopped_message(args, exc), file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(
            f"probe: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
