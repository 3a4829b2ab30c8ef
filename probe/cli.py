"""Command line: ``probe audit | attribute | lexicon | attack | report`` (DESIGN.md contract).

Bad input ends with one line on stderr and a non-zero exit; an interrupted run keeps what it
already wrote and says where.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from probe.compare.cli import add_compare_parser, add_replay_option, attack_or_replay, cmd_compare
from probe.errors import ProbeError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _model_options(parser: argparse.ArgumentParser, *, model_required: bool) -> None:
    parser.add_argument(
        "--model",
        required=model_required,
        default=None if model_required else "demo",
        help="'demo', 'demo-vlm', a local folder, a .gguf file or a hub id (default: demo)",
    )
    parser.add_argument("--gguf-file", help="GGUF file name inside --model's folder")
    parser.add_argument("--chat-template", help="Jinja chat template file for models without one")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model's own code to run (off by default)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, help="CPU threads for torch (default: 1 for tiny models, else all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=24,
        help="greedy tokens generated to verify a decision",
    )


def _prompt_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--prompts", required=required, help="JSONL/CSV prompt file or a public set"
    )
    parser.add_argument("--format", help="jsonl, csv, vlguard, xstest, advbench or figstep")
    parser.add_argument("--max-prompts", type=int, help="audit at most N prompts (label-balanced)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probe", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    audit = commands.add_parser("audit", help="full audit into a run directory")
    _model_options(audit, model_required=False)
    _prompt_options(audit, required=False)
    audit.add_argument("--out", default="probe-report", help="run directory (default probe-report)")
    audit.add_argument("--method", default="occlusion", help="attribution method")
    audit.add_argument(
        "--data-cues",
        help="data cue lexicon to compare with (a file from `probe lexicon --dataset`, or a "
        "shipped one by name, e.g. vlguard_cues)",
    )

    attribute = commands.add_parser("attribute", help="word attributions to a JSONL file")
    _model_options(attribute, model_required=True)
    _prompt_options(attribute, required=True)
    attribute.add_argument("--out", required=True)
    attribute.add_argument("--method", default="occlusion")

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
    lexicon.add_argument("--out", required=True, help="lexicon .json (a .csv is written beside it)")

    attack = commands.add_parser("attack", help="one-word attack with a lexicon's triggers")
    _model_options(attack, model_required=True)
    _prompt_options(attack, required=True)
    attack.add_argument("--lexicon", required=True)
    attack.add_argument("--out", required=True)
    attack.add_argument("--method", default="occlusion", help="attribution used to order positions")

    add_replay_option(attack)
    add_compare_parser(commands)

    report = commands.add_parser("report", help="re-render report.md/html from a run directory")
    report.add_argument("run_dir")
    return parser


def _config(args: argparse.Namespace):
    from probe.audit import AuditConfig

    names = AuditConfig.__dataclass_fields__
    return AuditConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})


def _positive(args: argparse.Namespace) -> None:
    for name in ("batch_size", "max_new_tokens", "max_prompts", "min_support", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ProbeError(f"--{name.replace('_', '-')} must be at least 1")


def _cmd_audit(args: argparse.Namespace) -> None:
    from probe.audit import run_audit

    run_dir = run_audit(_config(args))
    print(f"probe: report written to {run_dir / 'report.html'}")


def _subject_and_prompts(args: argparse.Namespace):
    from probe.attribution import get_attributor
    from probe.audit import load_audit_prompts, load_subject, prepare_prompts

    config = _config(args)
    attributor = get_attributor(config.method)
    prompts = load_audit_prompts(config)
    subject = load_subject(config)
    return subject, prepare_prompts(subject, prompts, config.method), attributor


def _cmd_attribute(args: argparse.Namespace) -> None:
    from probe.rundir import write_jsonl

    subject, prompts, attributor = _subject_and_prompts(args)
    records = attributor.attribute(subject, prompts, progress=True)
    write_jsonl(Path(args.out), (r.to_record() for r in records))
    print(f"probe: {len(records)} attributions written to {args.out}")


def _cmd_lexicon(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if args.attributions:
        from probe.attribution import WordAttribution
        from probe.lexicon import LexiconBuilder
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
        from probe.cues import mine_dataset

        params = {"min_count": args.min_support} if args.min_support else {}
        lexicon = mine_dataset(args.dataset, args.format, view=args.view, **params)
    lexicon.to_json(out)
    lexicon.to_csv(out.with_suffix(".csv"))
    print(
        f"probe: {len(lexicon.entries)} lexicon entries written to {out} and "
        f"{out.with_suffix('.csv')}"
    )


def _cmd_attack(args: argparse.Namespace) -> None:
    from probe.attack import OneWordAttack
    from probe.judge import RefusalJudge
    from probe.lexicon_table import TriggerLexicon
    from probe.rundir import write_jsonl

    lexicon = TriggerLexicon.from_json(args.lexicon)
    subject, prompts, attributor = _subject_and_prompts(args)
    judge = RefusalJudge.default()
    responses = subject.generate([p.prompt for p in prompts], args.max_new_tokens)
    refused = {p.id: judge.is_refusal(r) for p, r in zip(prompts, responses, strict=True)}
    attributions = attributor.attribute(subject, prompts, progress=True)
    result = OneWordAttack(max_new_tokens=args.max_new_tokens).run(
        subject, judge, lexicon, prompts, attributions, refused, progress=True
    )
    write_jsonl(Path(args.out), (r.to_record() for r in result.records))
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
    "compare": cmd_compare,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = getattr(args, "out", None)
    try:
        _positive(args)
        COMMANDS[args.command](args)
    except ProbeError as exc:
        print(f"probe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        where = f"; partial results kept in {out}" if out else ""
        print(f"probe: interrupted{where}", file=sys.stderr)
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
