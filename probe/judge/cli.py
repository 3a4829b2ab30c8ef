"""``probe judge fit | eval``: fit classifier weights on labelled responses, measure a judge."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from probe.errors import ProbeError

_FORMATS = "vlguard, pyrit (on-topic rows), jsonl or csv; default: from the suffix"


def add_parser(subcommands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``probe judge`` under the CLI's subcommands."""
    from probe.judge.classifier import FitSettings
    from probe.judge.policy import JUDGE_KINDS

    judge = subcommands.add_parser("judge", help="fit or measure the refusal judge")
    actions = judge.add_subparsers(dest="judge_command", required=True)
    defaults = FitSettings()

    fit = actions.add_parser("fit", help="fit classifier weights on labelled responses")
    _responses(fit)
    fit.add_argument("--out", required=True, help="weights .json to write")
    fit.add_argument("--seed", type=int, default=defaults.seed, help="cross-validation seed")
    fit.add_argument("--folds", type=int, default=defaults.folds)
    fit.add_argument("--c", type=float, default=defaults.c, help="inverse L2 strength")
    fit.add_argument("--window", type=int, default=defaults.window, help="characters read")
    fit.add_argument("--min-df", type=int, default=defaults.min_df)
    fit.add_argument("--max-features", type=int, default=defaults.max_features)
    fit.add_argument(
        "--min-threshold",
        type=float,
        default=defaults.min_threshold,
        help="lowest combining threshold considered (default %(default)s)",
    )
    fit.add_argument(
        "--min-precision",
        type=float,
        help="precision the combined judge must keep out of fold (default: the keyword judge's)",
    )

    evaluate = actions.add_parser("eval", help="precision, recall and F1 as one JSON object")
    _responses(evaluate)
    evaluate.add_argument("--judge", default="combined", choices=JUDGE_KINDS)
    evaluate.add_argument("--judge-weights", help="classifier weights (default: shipped)")
    return judge


def _responses(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--responses", required=True, nargs="+", help="labelled response file(s), one format"
    )
    parser.add_argument("--format", help=_FORMATS)


def handle(args: argparse.Namespace) -> None:
    """Run ``probe judge fit`` or ``probe judge eval``."""
    from probe.judge.data import load_responses

    data = load_responses(args.responses, args.format)
    if args.judge_command == "fit":
        _fit(args, data)
    else:
        _eval(args, data)


def _fit(args: argparse.Namespace, data) -> None:
    from probe.judge.classifier import FitSettings, fit_classifier

    out = Path(args.out)
    if out.resolve() in {Path(p).resolve() for p in args.responses}:
        raise ProbeError(f"--out {out} would overwrite an input file")
    settings = FitSettings(
        window=args.window,
        min_df=args.min_df,
        max_features=args.max_features,
        c=args.c,
        folds=args.folds,
        seed=args.seed,
        min_precision=args.min_precision,
        min_threshold=args.min_threshold,
    )
    classifier = fit_classifier(data, settings, sources=args.responses)
    command = ["probe", "judge", "fit", "--responses", *args.responses]
    command += ["--format", args.format] if args.format else []
    classifier.info["made_by"] = shlex.join([*command, "--seed", str(args.seed), "--out", str(out)])
    classifier.save(out)
    cv = classifier.info["cross_validated"]
    print(
        json.dumps(
            {
                "out": str(out),
                "n": len(data),
                "threshold": classifier.threshold,
                "cross_validated": {
                    k: {m: cv[k][m] for m in ("precision", "recall", "f1")} for k in cv
                },
            }
        )
    )


def _eval(args: argparse.Namespace, data) -> None:
    from probe.judge.metrics import prediction_metrics
    from probe.judge.policy import load_judge

    judge = load_judge(args.judge, args.judge_weights)
    verdicts = judge.verdicts(data.texts)
    metrics = prediction_metrics([v.refusal for v in verdicts], data.labels)
    by_kind = {}
    for kind in sorted(set(data.kinds)):
        rows = [i for i, k in enumerate(data.kinds) if k == kind and data.labels[i]]
        if rows:
            by_kind[kind] = sum(verdicts[i].refusal for i in rows) / len(rows)
    print(
        json.dumps(
            {
                "judge": judge.kind,
                "threshold": judge.threshold,
                **metrics,
                "recall_by_kind": by_kind,
            }
        )
    )
