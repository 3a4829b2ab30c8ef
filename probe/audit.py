"""The audit pipeline: Subject -> Attributor -> LexiconBuilder -> OneWordAttack -> Report.

Each stage's output is written to the run directory as soon as it exists, and summary.json
records which stages finished, so an interrupted or failing run keeps what it already wrote.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import probe
from probe.attack import OneWordAttack, write_flip_rates
from probe.attribution import get_attributor
from probe.attribution.image import attribute_images
from probe.cues import DataCueMiner
from probe.data import Prompt, balanced_head, load_prompts
from probe.demo import TRIGGERS, demo_prompts, demo_training_prompts, ensure_demo_model
from probe.demo_vlm import TRIGGERS as VLM_TRIGGERS
from probe.demo_vlm import demo_vlm_prompts, demo_vlm_training_prompts, ensure_demo_vlm_model
from probe.errors import ProbeError
from probe.judge import RefusalJudge
from probe.lexicon import LexiconBuilder
from probe.lexicon_table import TriggerLexicon, compare_lexicons
from probe.margin import calibrate_openings
from probe.nlp import word_normaliser
from probe.report import render_report
from probe.resources import lexicon_path
from probe.rundir import write_jsonl, write_lexicon, write_summary
from probe.subject import Subject
from probe.vision import VisionSubject, attach_images, load_subject_any


@dataclass
class AuditConfig:
    """Everything that determines an audit (also written to summary.json)."""

    model: str = "demo"
    prompts: str | None = None
    format: str | None = None
    out: str = "probe-report"
    method: str = "occlusion"
    device: str = "cpu"
    dtype: str = "auto"
    batch_size: int = 16
    max_prompts: int | None = None
    seed: int = 0
    gguf_file: str | None = None
    chat_template: str | None = None
    trust_remote_code: bool = False
    max_new_tokens: int = 24
    top_k_triggers: int = 5
    min_support: int = 3
    data_cues: str | None = None
    threads: int | None = None


def load_subject(config: AuditConfig) -> Subject:
    """The model named by ``config.model``: a built-in demo, a folder, a GGUF file or a hub id.

    A folder whose config has a vision part loads as a ``VisionSubject``."""
    template = None
    if config.chat_template:
        path = Path(config.chat_template)
        if not path.is_file():
            raise ProbeError(f"chat template file not found: {path}")
        template = path.read_text(encoding="utf-8")
    source: str | Path = config.model
    if config.model == "demo":
        source = ensure_demo_model(config.seed)
    elif config.model == "demo-vlm":
        source = ensure_demo_vlm_model(config.seed)
    return load_subject_any(
        source,
        gguf_file=config.gguf_file,
        device=config.device,
        dtype=config.dtype,
        chat_template=template,
        trust_remote_code=config.trust_remote_code,
        batch_size=config.batch_size,
        threads=config.threads,
    )


def load_audit_prompts(config: AuditConfig) -> list[Prompt]:
    if config.prompts is None:
        if config.model not in ("demo", "demo-vlm"):
            raise ProbeError("--prompts FILE is required for a model other than the demo")
        if config.model == "demo-vlm":
            prompts = demo_vlm_prompts(config.seed)
        else:
            prompts = demo_prompts(config.seed)
    else:
        prompts = load_prompts(config.prompts, config.format)
    if config.max_prompts is not None:
        if config.max_prompts < 1:
            raise ProbeError("--max-prompts must be at least 1")
        prompts = balanced_head(prompts, config.max_prompts)
    return prompts


def prepare_prompts(
    subject: Subject, prompts: list[Prompt], method: str | None = None
) -> list[Prompt]:
    """Prompts as ``subject`` takes them: a VLM's prompt texts carry their (checked) images.

    With ``method``, also checks that the attribution method can handle image prompts.
    """
    if not isinstance(subject, VisionSubject):
        return prompts
    if method is not None and any(p.image is not None for p in prompts):
        if not get_attributor(method).supports_images:
            raise ProbeError(
                f"method {method!r} does not support prompts with images yet; use occlusion, "
                "occlusion-baseline, leave-one-out, shapley or lime"
            )
    return attach_images(prompts)


def load_data_cues(config: AuditConfig) -> TriggerLexicon | None:
    """The data-level cue lexicon to compare the model's triggers with, if any.

    ``--data-cues`` names a lexicon file (``probe lexicon --dataset ...``) or a shipped one by
    stem (e.g. ``vlguard_cues``). The demo's default is the cue lexicon of its own training set.
    """
    if config.data_cues:
        path = Path(config.data_cues)
        if not path.is_file() and not path.suffix:
            path = lexicon_path(f"{config.data_cues}.json")
        return TriggerLexicon.from_json(path)
    if config.model in ("demo", "demo-vlm"):
        if config.model == "demo-vlm":
            train = demo_vlm_training_prompts(config.seed)
        else:
            train = demo_training_prompts(config.seed)
        miner = DataCueMiner(view="any").fit([p.prompt for p in train], [p.label for p in train])
        return miner.lexicon_
    return None


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


def run_audit(config: AuditConfig, *, progress: bool = True) -> Path:
    """Run the whole audit; returns the run directory."""
    torch.manual_seed(config.seed)
    attributor = get_attributor(config.method)  # fails fast on an unknown method
    prompts = load_audit_prompts(config)
    run_dir = Path(config.out)
    try:
        (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProbeError(f"cannot create output folder {run_dir}: {exc.strerror}") from None
    summary: dict = {
        "status": "running",
        "model": config.model,
        "config": asdict(config),
        "versions": {
            "probe": probe.__version__,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "python": platform.python_version(),
        },
        "stages_completed": [],
        "timings_s": {},
    }
    if config.model == "demo":
        summary["ground_truth_triggers"] = TRIGGERS
    elif config.model == "demo-vlm":
        summary["ground_truth_triggers"] = VLM_TRIGGERS
    write_summary(run_dir, summary)

    def finish_stage(name: str, started: float) -> None:
        summary["stages_completed"].append(name)
        summary["timings_s"][name] = round(time.perf_counter() - started, 2)
        write_summary(run_dir, summary)

    try:
        started = time.perf_counter()
        subject = load_subject(config)
        summary["model_path"] = subject.name
        prompts = prepare_prompts(subject, prompts, config.method)
        finish_stage("load", started)

        started = time.perf_counter()
        judge = RefusalJudge.default()
        texts = [p.prompt for p in prompts]
        responses = subject.generate(texts, config.max_new_tokens)
        refused = dict(zip([p.id for p in prompts], judge(responses), strict=True))
        write_jsonl(
            run_dir / "responses.jsonl",
            (
                {
                    "id": p.id,
                    "prompt": p.prompt,
                    "label": p.label,
                    "response": r,
                    "judged_refusal": refused[p.id],
                }
                for p, r in zip(prompts, responses, strict=True)
            ),
        )
        calibration = calibrate_openings(
            subject.margin_config,
            responses,
            [refused[p.id] for p in prompts],
            lambda cfg: subject.prompt_margins(texts, cfg),
        )
        subject.margin_config = calibration.config
        summary["margin_calibration"] = calibration.to_dict()
        finish_stage("generate_and_calibrate", started)

        started = time.perf_counter()
        attributions = attributor.attribute(subject, prompts, progress=progress)
        if isinstance(subject, VisionSubject):
            attribute_images(subject, prompts, attributions, n_steps=8, progress=progress)
        write_jsonl(run_dir / "attributions.jsonl", (a.to_record() for a in attributions))
        finish_stage("attribute", started)

        started = time.perf_counter()
        lexicon = (
            LexiconBuilder(min_support=config.min_support, seed=config.seed)
            .fit(attributions)
            .lexicon_
        )
        write_lexicon(run_dir, lexicon)
        data_cues = load_data_cues(config)
        if data_cues is not None:
            data_cues.to_json(run_dir / "data_cues.json")
            summary["data_cue_comparison"] = compare_lexicons(
                lexicon, data_cues, normalise=word_normaliser(lemmatize=True)
            )
        finish_stage("lexicon", started)

        started = time.perf_counter()
        attack = OneWordAttack(
            top_k_triggers=config.top_k_triggers, max_new_tokens=config.max_new_tokens
        ).run(subject, judge, lexicon, prompts, attributions, refused, progress=progress)
        write_jsonl(run_dir / "attacks.jsonl", (r.to_record() for r in attack.records))
        write_flip_rates(lexicon, attack)
        write_lexicon(run_dir, lexicon)
        finish_stage("attack", started)

        harmful = [refused[p.id] for p in prompts if p.label == "harmful"]
        benign = [refused[p.id] for p in prompts if p.label == "benign"]
        summary["counts"] = {
            "prompts": len(prompts),
            "harmful": len(harmful),
            "benign": len(benign),
            "unlabelled": len(prompts) - len(harmful) - len(benign),
            "attacked_harmful": sum(t == "compliance" for t in attack.attacked.values()),
            "attacked_benign": sum(t == "refusal" for t in attack.attacked.values()),
            "verified_edits": len(attack.records),
        }
        summary["metrics"] = {
            "refusal_rate_harmful": _rate(harmful),
            "refusal_rate_benign": _rate(benign),
            "asr_one_word": attack.rate("compliance"),
            "over_refusal_one_word": attack.rate("refusal"),
            "queries_per_success": attack.queries_per_success,
            "margin_judge_agreement": calibration.agreement_final,
        }
        if isinstance(subject, VisionSubject):
            summary["metrics"].update(_reliance_metrics(prompts, attributions, refused))
        summary["notes"] = attack.notes
        summary["status"] = "complete"
        write_summary(run_dir, summary)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        summary["status"] = "interrupted" if interrupted else "failed"
        if not interrupted:
            summary["error"] = f"{type(exc).__name__}: {exc}"
        write_summary(run_dir, summary)
        raise
    render_report(run_dir)
    return run_dir
