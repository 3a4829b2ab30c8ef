"""``probe audit`` and the stage commands, driven through the stage functions of ``probe.pipeline``.

An audit writes one run directory (``probe.rundir``): created by probe or carrying its marker,
locked while the run is active, with every per-prompt record appended as it is made. Rerunning
with the same ``--out`` resumes: each stage reuses the records already written (counted in
``summary.json["resumed"]``) and a changed setting is refused unless ``--fresh`` is given.
SIGINT and SIGTERM end the run with an honest status ("interrupted" / "terminated"); a run
killed outright keeps status "running" under a lock that died with it, which the report and a
rerun read as ``rundir.KILLED``. Under ``torchrun`` or ``accelerate launch`` the stages are
shared out across the processes and rank 0 writes the run directory
(``summary.json["world_size"]``); an error on any rank stops every rank (``World.together``).
"""

from __future__ import annotations

import platform
import resource
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import probe
from probe.attack import AttackResult, write_flip_rates
from probe.demos.registry import builtin_model
from probe.errors import ProbeError
from probe.lexicon.table import TriggerLexicon, compare_lexicons
from probe.nlp import import_nltk, universal_tags, word_normaliser, wordnet_synonyms
from probe.parallel import World
from probe.pipeline import (
    AuditConfig,
    Stage,
    StageOutput,
    attack,
    attribute,
    attributions_of,
    build_attributor,
    build_judge,
    build_lexicon,
    calibrate,
    check_config,
    config_differences,
    generate_and_judge,
    identity,
    image_control_metrics,
    load_audit_prompts,
    load_data_cues,
    load_subject,
    prepare_prompts,
    prompts_fingerprint,
)
from probe.report import render_report
from probe.report.records import SCHEMA_VERSION
from probe.rundir import (
    DERIVED_FILES,
    KILLED,
    STATE,
    Appender,
    RunDir,
    check_output,
    read_appended,
    read_summary,
    remove_own_figures,
    write_lexicon,
    write_summary,
)
from probe.subject.vision import VisionSubject

__all__ = [
    "AuditConfig",
    "RunStopped",
    "load_audit_prompts",
    "load_data_cues",
    "load_subject",
    "prepare_prompts",
    "run_attack",
    "run_attribute",
    "run_audit",
]

STAGES = ("generate", "attribute", "attack")


class RunStopped(KeyboardInterrupt):
    """A run stopped by a signal (SIGTERM); Ctrl-C stays a plain ``KeyboardInterrupt``."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.signal_name = name


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM into ``RunStopped`` for the block, so a run can record why it ended."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise RunStopped(signal.Signals(signum).name)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextmanager
def shielded() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while the final status is written (a second Ctrl-C waits)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def stop_status(exc: BaseException) -> str:
    return "terminated" if isinstance(exc, RunStopped) else "interrupted"


def _versions() -> dict:
    return {
        "probe": probe.__version__,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "python": platform.python_version(),
    }


def _rate(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def _reliance_metrics(prompts, attributions, refused: dict[str, bool]) -> dict:
    """Mean text-vs-image reliance share (``probe.attribution.image``) over image prompts."""
    label = {p.id: p.label for p in prompts}
    shares = {
        a.id: a.extra["text_reliance"]
        for a in attributions
        if a.extra.get("text_reliance") is not None
    }
    refused_harmful = [s for i, s in shares.items() if label[i] == "harmful" and refused[i]]
    return {
        "text_reliance_refused_harmful": _rate(refused_harmful),
        "text_reliance_all_images": _rate(list(shares.values())),
    }


def open_run(path: Path, config: AuditConfig, fingerprint: str) -> tuple[RunDir, dict | None]:
    """Create or reopen the run directory, locked; check that a previous run matches.

    Returns the run and the previous summary (None for a new run or ``--fresh``); a previous run
    that still said "running" was killed (the lock is ours), so its status reads ``KILLED``.
    Derived files
    of a previous attempt (lexicon, report, figures) are removed, so a failing rerun never
    shows stale results beside its own summary.
    """
    run = RunDir.open(path)
    try:
        previous = read_summary(path)
        if previous is not None and previous.get("status") == "running":
            previous = {**previous, "status": KILLED}  # we hold the lock: its holder is dead
            if not config.fresh:
                print(
                    f"probe: note: the run in {path} was killed before it could finish (its "
                    "summary still said running); continuing from the records it wrote",
                    file=sys.stderr,
                )
        if config.fresh:
            run.clear()
            previous = None
        elif previous is not None:
            differences = config_differences(previous.get("config") or {}, identity(config))
            if previous.get("prompts_sha256") != fingerprint:
                differences.append("prompts: the prompt set differs")
            if differences:
                raise ProbeError(
                    f"{path} holds a run with other settings ({'; '.join(differences)}); "
                    "rerun with --fresh to replace it, or choose another --out"
                )
        elif config.resume:
            raise ProbeError(f"nothing to resume: {path} holds no probe run")
        for name in DERIVED_FILES:
            if name != "summary.json":
                (path / name).unlink(missing_ok=True)
        remove_own_figures(path / "figures")
    except BaseException:
        run.close()
        raise
    return run, previous


class _Failures:
    """failures.jsonl: per-prompt failures, by the stage they happened in (rank 0 writes)."""

    def __init__(self, path: Path | None, world: World) -> None:
        self.path = path
        self.world = world
        self.records: list[dict] = world.on_main(
            lambda: read_appended(path) if path is not None else []
        )

    def at(self, stage: str) -> set[str]:
        """Prompt ids that failed at ``stage`` or at an earlier stage."""
        upto = STAGES[: STAGES.index(stage) + 1]
        return {f["id"] for f in self.records if f.get("stage") in upto}

    def add(self, stage: str, failures: list[dict], attempted: int) -> None:
        if failures and len(failures) >= attempted:
            first = failures[0]
            raise ProbeError(
                f"every prompt failed in stage {stage}; prompt {first['id']}: {first['error']}"
            )
        self.records += failures
        if failures and self.path is not None and self.world.is_main:
            out = Appender(self.path)
            out.write(failures)
            out.close()

    def summary(self) -> dict:
        by_stage: dict[str, int] = {}
        for f in self.records:
            by_stage[f["stage"]] = by_stage.get(f["stage"], 0) + 1
        return {"count": len(self.records), "by_stage": by_stage}


class _Run:
    """One run's bookkeeping on rank 0: the summary, written after each stage."""

    def __init__(self, folder: Path | None, summary: dict, world: World) -> None:
        self.folder = folder
        self.summary = summary
        self.world = world
        self.started = time.perf_counter()

    def save(self) -> None:
        if self.folder is not None and self.world.is_main:
            write_summary(self.folder, self.summary)

    def stage(self, name: str, reused: int | None = None) -> None:
        self.summary["stages_completed"].append(name)
        self.summary["timings_s"][name] = round(time.perf_counter() - self.started, 2)
        if reused is not None:
            self.summary["resumed"][name] = reused
        busy = self.world.take_busy()
        if busy:  # the stage's sharded work, per rank: how evenly the ranks shared it
            self.summary.setdefault("rank_busy_s", {})[name] = busy
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.summary.setdefault("peak_rss_mib", {})[name] = round(peak, 1)
        self.started = time.perf_counter()
        self.save()


def _new_summary(
    config: AuditConfig, fingerprint: str, world: World, previous: dict | None
) -> dict:
    summary: dict = {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "model": config.model,
        "config": asdict(config),
        "prompts_sha256": fingerprint,
        "versions": _versions(),
        "world_size": world.size,
        "stages_completed": [],
        "timings_s": {},
        "resumed": {},
    }
    if previous is not None:
        summary["previous_status"] = previous.get("status")
    builtin = builtin_model(config.model)
    if builtin is not None:
        summary["ground_truth_triggers"] = builtin.triggers
    return summary


def _stage(folder: Path | None, parts: Path | None, name: str, file: str) -> Stage:
    return Stage(name, folder / file if folder is not None else None, parts)


def _first_stages(
    config: AuditConfig,
    world: World,
    run: _Run,
    failures: _Failures,
    stages: dict[str, Stage],
    progress: bool,
    prompts: list,
):
    """load -> generate and judge -> calibrate -> attribute, as every command runs them."""
    attributor = build_attributor(config)
    subject = world.together(lambda: load_subject(config, world))
    run.summary["model_path"] = subject.name
    prompts = prepare_prompts(subject, prompts, config.method)
    run.stage("load")

    judge = build_judge(config)
    todo = [p for p in prompts if p.id not in failures.at("generate")]
    responses = generate_and_judge(
        subject, judge, todo, config, stage=stages["generate"], world=world, progress=progress
    )
    failures.add("generate", responses.failures, len(todo))
    run.stage("generate_and_judge", responses.reused)

    answered = [p for p in prompts if p.id in responses.records]
    calibration = calibrate(subject, answered, responses.records, config, world=world)
    run.summary["margin_calibration"] = calibration.to_dict()
    run.stage("calibrate")

    todo = [p for p in answered if p.id not in failures.at("attribute")]
    output = attribute(
        subject, attributor, todo, config, stage=stages["attribute"], world=world,
        progress=progress,
    )  # fmt: skip
    failures.add("attribute", output.failures, len(todo))
    run.stage("attribute", output.reused)
    return subject, judge, answered, responses, calibration, output


def _attack_stage(
    config, world, run, failures, stages, progress, subject, judge, lexicon, prompts, output,
    responses: StageOutput,
) -> AttackResult:  # fmt: skip
    attributions = attributions_of(output, prompts)
    refused = {i: bool(r["judged_refusal"]) for i, r in responses.records.items()}
    todo = [p for p in prompts if p.id in output.records and p.id not in failures.at("attack")]
    result, reused, failed = attack(
        subject, judge, lexicon, todo, attributions, refused, config,
        stage=stages["attack"], log=stages["attack_log"], world=world, progress=progress,
    )  # fmt: skip
    failures.add("attack", failed, len(todo))
    run.stage("attack", reused)
    return result


def _stopped(run: _Run, exc: BaseException) -> None:
    """Record how the run ended, with signals held off meanwhile."""
    with shielded():
        if isinstance(exc, KeyboardInterrupt):
            run.summary["status"] = stop_status(exc)
        else:
            run.summary["status"] = "failed"
            run.summary["error"] = f"{type(exc).__name__}: {exc}"
        run.save()


def run_audit(config: AuditConfig, *, progress: bool = True) -> Path:
    """Run (or resume) the whole audit into ``config.out``; returns the run directory."""
    check_config(config)
    world = World.from_env(config.device, config.dist_timeout)
    torch.manual_seed(config.seed)
    prompts = load_audit_prompts(config)  # bad prompt files fail before any folder is made
    fingerprint = prompts_fingerprint(prompts)
    folder = Path(config.out)
    opened: dict = {}

    def open_here() -> None:
        opened["run"], opened["previous"] = open_run(folder, config, fingerprint)

    world.on_main(open_here)
    lock: RunDir | None = opened.get("run")
    finished = False
    run = _Run(folder, _new_summary(config, fingerprint, world, opened.get("previous")), world)
    parts = folder / STATE / "parts"
    stages = {
        "generate": _stage(folder, parts, "generate", "responses.jsonl"),
        "attribute": _stage(folder, parts, "attribute", "attributions.jsonl"),
        "attack": _stage(folder, parts, "attack", "attacks.jsonl"),
        "attack_log": Stage("attack-log", folder / STATE / "attack_chunks.jsonl", parts),
    }
    try:
        run.save()
        with stop_on_signals():
            try:
                failures = _Failures(folder / "failures.jsonl", world)
                warming = start_language_warmup()
                subject, judge, prompts, responses, calibration, output = _first_stages(
                    config, world, run, failures, stages, progress, prompts
                )
                warming.join()
                lexicon = _lexicon_stage(config, world, run, output, prompts)
                result = _attack_stage(
                    config, world, run, failures, stages, progress, subject, judge, lexicon,
                    prompts, output, responses,
                )  # fmt: skip
                if world.is_main:
                    write_flip_rates(lexicon, result)
                    write_lexicon(folder, lexicon)
                _finish(run, subject, prompts, responses, output, calibration, result, failures)
            except BaseException as exc:
                _stopped(run, exc)
                raise
        if world.is_main:
            render_report(folder)
        finished = True
    finally:
        if lock is not None:
            lock.close()
        world.close(finished)
    return folder


def _lexicon_stage(config, world, run, output: StageOutput, prompts) -> TriggerLexicon:
    """Fit the lexicon once, on rank 0, on every prompt's attribution; share it."""
    folder = run.folder

    def fit() -> TriggerLexicon:
        lexicon = build_lexicon(attributions_of(output, prompts), config)
        if folder is not None:
            write_lexicon(folder, lexicon)
            data_cues = load_data_cues(config)
            if data_cues is not None:
                data_cues.to_json(folder / "data_cues.json")
                run.summary["data_cue_comparison"] = compare_lexicons(
                    lexicon, data_cues, normalise=word_normaliser(lemmatize=True)
                )
        return lexicon

    lexicon = world.on_main(fit)
    run.stage("lexicon")
    return lexicon


def start_language_warmup() -> threading.Thread:
    """Import NLTK here, then load the tagger and WordNet (seconds) in a background thread
    while the model stages, which never use them, run."""
    import_nltk()  # on this thread: never two threads importing scipy at once
    warming = threading.Thread(target=warm_language_data, daemon=True)
    warming.start()
    return warming


def warm_language_data() -> None:
    """Load the POS tagger and WordNet now (first use costs seconds), if they are installed.

    Run in a background thread while the model stages (which never use them) compute; an
    error is left for the first real use, in the main thread, to raise and report.
    """
    try:
        universal_tags(["Tell", "me", "how"])
        wordnet_synonyms("tell", "VERB")
        word_normaliser(lemmatize=True)("tells")
    except Exception:  # noqa: BLE001, S110 - the lexicon stage makes the same calls and reports
        pass


def _keyword_judge_metrics(prompts, responses: dict[str, dict]) -> dict:
    """Refusal rates under the keyword matcher alone, beside the configured judge's, and how
    many responses the two read differently (what the classifier changed)."""
    keyword = {
        i: bool(r["judge"]["keyword_refusal"])
        for i, r in responses.items()
        if isinstance(r.get("judge"), dict) and "keyword_refusal" in r["judge"]
    }
    if not keyword:
        return {}
    by_label = {
        label: [keyword[p.id] for p in prompts if p.label == label and p.id in keyword]
        for label in ("harmful", "benign")
    }
    return {
        "refusal_rate_harmful_keyword": _rate(by_label["harmful"]),
        "refusal_rate_benign_keyword": _rate(by_label["benign"]),
        "judge_disagreements": sum(
            keyword[i] != bool(responses[i]["judged_refusal"]) for i in keyword
        ),
    }


def _keyword_judged_flips(result) -> dict:
    """One-word ASR / over-refusal had the keyword matcher alone read the same verified edits'
    responses (each record keeps both judges' opinions), and how many verified edits the two
    read differently (what the configured judge changed in the headline figures)."""
    from probe.judge import KeywordMatcher

    matcher = KeywordMatcher.default()
    out: dict = {"attack_judge_disagreements": 0}
    for name, target in (("asr_one_word", "compliance"), ("over_refusal_one_word", "refusal")):
        attacked = [i for i, t in result.attacked.items() if t == target]
        won = set()
        for record in result.records:
            if record.target != target:
                continue
            opinions = record.judge or {}
            keyword_refusal = opinions.get("keyword_refusal")
            if keyword_refusal is None:  # a record from before both opinions were kept
                keyword_refusal = matcher.is_refusal(record.response_after)
            keyword_success = bool(keyword_refusal) == (target == "refusal")
            if keyword_success:
                won.add(record.id)
            if keyword_success != bool(record.flipped):
                out["attack_judge_disagreements"] += 1
        out[f"{name}_keyword_judge"] = len(won) / len(attacked) if attacked else None
    return out


def _finish(run, subject, prompts, responses, output, calibration, result, failures) -> None:
    refused = {i: bool(r["judged_refusal"]) for i, r in responses.records.items()}
    harmful = [refused[p.id] for p in prompts if p.label == "harmful"]
    benign = [refused[p.id] for p in prompts if p.label == "benign"]
    summary = run.summary
    summary["counts"] = {
        "prompts": len(prompts),
        "harmful": len(harmful),
        "benign": len(benign),
        "unlabelled": len(prompts) - len(harmful) - len(benign),
        "attacked_harmful": sum(t == "compliance" for t in result.attacked.values()),
        "attacked_benign": sum(t == "refusal" for t in result.attacked.values()),
        "verified_edits": len(result.records),
        "failed": len(failures.records),
    }
    summary["failures"] = failures.summary()
    summary["metrics"] = {
        "refusal_rate_harmful": _rate(harmful),
        "refusal_rate_benign": _rate(benign),
        "asr_one_word": result.rate("compliance"),
        "over_refusal_one_word": result.rate("refusal"),
        "queries_per_success": result.queries_per_success,
        "margin_judge_agreement": calibration.agreement_final,
    }
    summary["metrics"].update(_keyword_judge_metrics(prompts, responses.records))
    summary["metrics"].update(_keyword_judged_flips(result))
    summary["attack_metrics"] = result.metrics()
    if isinstance(subject, VisionSubject):
        attributions = attributions_of(output, prompts)
        summary["metrics"].update(_reliance_metrics(prompts, attributions, refused))
        summary["image_controls"] = image_control_metrics(prompts, attributions, refused)
    summary["notes"] = result.notes
    summary["status"] = "complete"
    run.save()


# ------------------------------------------------------------------ stage commands


def state_folder(out: Path) -> Path:
    """Where a stage command keeps its state beside its output file: ``.NAME.probe/``."""
    return out.with_name(f".{out.name}.probe")


def _open_stage_command(
    out: Path, config: AuditConfig, inputs: list, fingerprint: str, command: str
) -> tuple[RunDir, dict | None]:
    """Check the output file, then open (locked) its state folder; refuse foreign files."""
    check_output(out, inputs, "output")
    state = state_folder(out)
    if out.exists() and not (state / ".probe" / "run.json").is_file():
        raise ProbeError(
            f"output {out} exists and was not written by probe {command}; choose another --out"
        )
    if not out.parent.exists():
        try:
            out.parent.mkdir(parents=True)
        except OSError as exc:
            raise ProbeError(f"cannot create {out.parent}: {exc.strerror or exc}") from None
    run, previous = open_run(state, config, fingerprint)
    if previous is None:
        out.unlink(missing_ok=True)  # --fresh: the output goes with its state
    return run, previous


def _stage_command(config: AuditConfig, out: Path, command: str, inputs: list, body):
    """Shared frame of ``probe attribute`` / ``probe attack``: validate, lock, run, record."""
    check_config(config)
    world = World.from_env(config.device, config.dist_timeout)
    torch.manual_seed(config.seed)
    prompts = load_audit_prompts(config)
    fingerprint = prompts_fingerprint(prompts)
    state = state_folder(out)
    opened: dict = {}

    def open_here() -> None:
        opened["run"], opened["previous"] = _open_stage_command(
            out, config, [config.prompts, config.chat_template, *inputs], fingerprint, command
        )

    world.on_main(open_here)
    lock: RunDir | None = opened.get("run")
    finished = False
    run = _Run(state, _new_summary(config, fingerprint, world, opened.get("previous")), world)
    run.summary["command"] = command
    run.summary["output"] = str(out)
    parts = state / STATE / "parts"
    stages = {
        "generate": _stage(state, parts, "generate", "responses.jsonl"),
        "attribute": _stage(state, parts, "attribute", "attributions.jsonl"),
        "attack": Stage("attack", out, parts),
        "attack_log": Stage("attack-log", state / STATE / "attack_chunks.jsonl", parts),
    }
    if command == "attribute":
        stages["attribute"] = Stage("attribute", out, parts)
    try:
        run.save()
        with stop_on_signals():
            try:
                failures = _Failures(state / "failures.jsonl", world)
                found = body(config, world, run, failures, stages, prompts)
                run.summary["failures"] = failures.summary()
                run.summary["status"] = "complete"
                run.save()
            except BaseException as exc:
                _stopped(run, exc)
                raise
        finished = True
    finally:
        if lock is not None:
            lock.close()
        world.close(finished)
    return found


def run_attribute(config: AuditConfig, out: str | Path, *, progress: bool = True) -> int:
    """``probe attribute``: the audit's first stages; attributions appended to ``out``.

    Returns the number of attributions in ``out``. State (responses, config) lives in
    ``.OUT.probe/`` beside it, so a rerun resumes.
    """

    def body(config, world, run, failures, stages, prompts):
        output = _first_stages(config, world, run, failures, stages, progress, prompts)[-1]
        return len(output.records)

    return _stage_command(config, Path(out), "attribute", [], body)


def run_attack(
    config: AuditConfig, lexicon_file: str | Path, out: str | Path, *, progress: bool = True
) -> AttackResult:
    """``probe attack``: the audit's stages with a given lexicon; verified edits in ``out``."""
    lexicon = TriggerLexicon.from_json(lexicon_file)

    def body(config, world, run, failures, stages, prompts):
        subject, judge, prompts, responses, _, output = _first_stages(
            config, world, run, failures, stages, progress, prompts
        )
        result = _attack_stage(
            config, world, run, failures, stages, progress, subject, judge, lexicon, prompts,
            output, responses,
        )  # fmt: skip
        run.summary["metrics"] = {
            "asr_one_word": result.rate("compliance"),
            "over_refusal_one_word": result.rate("refusal"),
            "queries_per_success": result.queries_per_success,
        }
        return result

    return _stage_command(config, Path(out), "attack", [lexicon_file], body)
