"""The audit's stages, one function each: load, generate-and-judge, calibrate, attribute, build
lexicon, attack, report.

``probe audit``, every stage subcommand, the notebooks and the benchmarks call these, so a stage
gives one result however it is run. Stages that work per prompt run in fixed chunks of at most
``batch_size`` prompts (``chunks_of``: chunk k is always the same prompts, so a resumed or
multi-process run batches exactly as a one-process run does); each chunk's records are appended
to the stage's file as soon as they exist, a rerun skips what the file already holds, and a
prompt that fails (an over-long prompt) is recorded in ``failures.jsonl`` and skipped instead of
ending the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from probe.attack import AttackRecord, AttackResult, OneWordAttack
from probe.attack.cascade import CascadeAttack
from probe.attack.goal import target_for
from probe.attack.recipes.thorough import thorough_attack
from probe.attribution import WordAttribution, get_attributor
from probe.attribution.base import Attributor
from probe.attribution.image import attribute_images
from probe.data import Prompt, balanced_head, iter_prompts
from probe.demos.registry import builtin_model
from probe.errors import ProbeError
from probe.judge import RefusalJudge, Verdict, load_judge
from probe.lexicon.builder import LexiconBuilder
from probe.lexicon.cues import DataCueMiner
from probe.lexicon.table import TriggerLexicon
from probe.parallel import World
from probe.query import Query
from probe.resources import lexicon_path
from probe.rundir import Appender, read_appended, write_jsonl
from probe.subject.margin import Calibration, MarginConfig, agreement, calibrate_openings
from probe.subject.text import Subject
from probe.subject.vision import VisionSubject, check_images, load_subject_any

EDIT_KINDS = ("substitution", "insertion", "deletion")


@dataclass
class AuditConfig:
    """Everything that determines an audit (also written to summary.json).

    ``refusal_openings`` / ``compliance_openings``: comma-separated openings or an openings JSON
    file (``{"refusal": [...], "compliance": [...]}``); given, they replace calibration.
    ``ig_steps``, ``shapley_samples``, ``lime_samples``: the attribution method's parameters
    (None: the method's default). ``fresh``: discard a previous run in ``out`` and start over;
    ``resume``: require a previous run to continue. ``judge``: keyword, classifier or combined
    (``probe.judge``), with ``judge_weights`` for the classifier (None: the shipped weights).
    ``allow_pickle``: load pickle weights; ``allow_outside_images``: read images from outside
    the prompt file's folder (both off: see the README's "Untrusted inputs").
    """

    model: str = "demo"
    prompts: str | None = None
    format: str | None = None
    out: str = "probe-report"
    method: str = "occlusion"
    device: str = "cpu"
    dtype: str = "auto"
    device_map: str | None = None
    batch_size: int = 16
    max_prompts: int | None = None
    seed: int = 0
    gguf_file: str | None = None
    chat_template: str | None = None
    trust_remote_code: bool = False
    max_new_tokens: int = 24
    top_k_triggers: int = 5
    max_queries: int = 40
    edit_kinds: str | None = None
    attack_recipe: str | None = None  # None: "default"
    min_support: int = 3
    data_cues: str | None = None
    threads: int | None = None
    dist_timeout: int | None = None  # seconds; None: parallel.DEFAULT_TIMEOUT_S
    refusal_openings: str | None = None
    compliance_openings: str | None = None
    ig_steps: int | None = None
    shapley_samples: int | None = None
    lime_samples: int | None = None
    fresh: bool = False
    resume: bool = False
    judge: str = "combined"
    judge_weights: str | None = None
    allow_pickle: bool = False
    allow_outside_images: bool = False


# Settings that change how fast a run goes or where it writes, never what it finds.
RUN_ONLY = (
    "out",
    "device",
    "device_map",
    "batch_size",
    "threads",
    "dist_timeout",
    "fresh",
    "resume",
)


def identity(config: AuditConfig) -> dict:
    """The config fields that determine a run's results (what a resume must match)."""
    return {k: v for k, v in asdict(config).items() if k not in RUN_ONLY}


def config_differences(previous: dict, current: dict) -> list[str]:
    """``name: old -> new`` for each result-determining setting that differs."""
    return [
        f"{key}: {previous.get(key)!r} -> {current.get(key)!r}"
        for key in sorted(set(previous) | set(current))
        if key not in RUN_ONLY and previous.get(key) != current.get(key)
    ]


def prompts_fingerprint(prompts: Iterable[Prompt]) -> str:
    """SHA-256 over the prompts' ids, texts, labels and images (a changed file is noticed).

    Updated prompt by prompt, so it can be taken over a lazily read file."""
    digest = hashlib.sha256()
    for p in prompts:
        image = str(p.image) if p.image is not None else ""
        digest.update(json.dumps([p.id, p.prompt, p.label, image]).encode("utf-8"))
    return digest.hexdigest()


# ------------------------------------------------------------------ load


def load_subject(config: AuditConfig, world: World | None = None) -> Subject:
    """The model named by ``config.model``: a built-in, a folder, a GGUF file or a hub id.

    A folder whose config has a vision part loads as a ``VisionSubject``."""
    world = world or World()
    template = None
    if config.chat_template:
        path = Path(config.chat_template)
        if not path.is_file():
            raise ProbeError(f"chat template file not found: {path}")
        template = path.read_text(encoding="utf-8")
    builtin = builtin_model(config.model)
    source: str | Path = builtin.ensure(config.seed) if builtin else config.model
    extra = {"device_map": config.device_map} if config.device_map else {}
    return load_subject_any(
        source,
        gguf_file=config.gguf_file,
        device=world.device(config.device),
        dtype=config.dtype,
        chat_template=template,
        trust_remote_code=config.trust_remote_code,
        batch_size=config.batch_size,
        threads=config.threads,
        allow_pickle=config.allow_pickle,
        **extra,
    )


def load_audit_prompts(config: AuditConfig) -> list[Prompt]:
    """The prompts to audit: ``config.prompts``, or the built-in model's own prompts.

    The file is read lazily; with ``max_prompts`` only the balanced sample's candidates are held
    (``balanced_head``), so a large file capped to N prompts costs memory in N. The audit keeps
    the chosen prompts as a list: every stage makes a record for each of them."""
    if config.max_prompts is not None and config.max_prompts < 1:
        raise ProbeError("--max-prompts must be at least 1")
    if config.prompts is None:
        builtin = builtin_model(config.model)
        if builtin is None:
            raise ProbeError("--prompts FILE is required for a model other than the demo")
        prompts = builtin.prompts(config.seed)
        return balanced_head(prompts, config.max_prompts) if config.max_prompts else prompts
    read = iter_prompts(
        config.prompts, config.format, allow_outside_images=config.allow_outside_images
    )
    return balanced_head(read, config.max_prompts) if config.max_prompts else list(read)


def prepare_prompts(
    subject: Subject, prompts: list[Prompt], method: str | None = None
) -> list[Prompt]:
    """Prompts as ``subject`` takes them: a VLM's images are checked now; a text-only model's
    prompts lose their images (with one warning).

    With ``method``, also checks that the attribution method can handle image prompts.
    """
    if not isinstance(subject, VisionSubject):
        with_images = sum(p.image is not None for p in prompts)
        if with_images:
            warnings.warn(
                f"{with_images} prompts have an image, but {subject.name or 'the model'} is a "
                "text-only model: their images are ignored",
                stacklevel=2,
            )
        return [dataclasses.replace(p, image=None) if p.image is not None else p for p in prompts]
    if method is not None:
        get_attributor(method).check_images(prompts)
    check_images(prompts)
    return prompts


def build_attributor(config: AuditConfig) -> Attributor:
    """The attribution method with the config's parameters (fails fast on a bad name)."""
    params: dict = {}
    if config.ig_steps is not None and config.method == "integrated-gradients":
        params["n_steps"] = config.ig_steps
    if config.shapley_samples is not None and config.method == "shapley":
        params["n_samples"] = config.shapley_samples
    if config.lime_samples is not None and config.method == "lime":
        params["n_samples"] = config.lime_samples
    return get_attributor(config.method, **params)


def build_judge(config: AuditConfig) -> RefusalJudge:
    """The refusal judge every stage uses to read a generation (one place to configure it)."""
    return load_judge(config.judge, config.judge_weights)


ATTACK_RECIPES = ("default", "thorough")


def build_attack(config: AuditConfig) -> OneWordAttack | CascadeAttack:
    """The config's attack recipe with its budget, trigger count and edit kinds."""
    params: dict = {
        "top_k_triggers": config.top_k_triggers,
        "max_queries": config.max_queries,
        "max_new_tokens": config.max_new_tokens,
    }
    if config.edit_kinds:
        params["edit_kinds"] = parse_edit_kinds(config.edit_kinds)
    recipe = config.attack_recipe or "default"
    if recipe not in ATTACK_RECIPES:
        raise ProbeError(f"unknown attack recipe {recipe!r}; use {', '.join(ATTACK_RECIPES)}")
    if recipe == "thorough":
        return thorough_attack(**params)
    return OneWordAttack(**params)


def parse_edit_kinds(value: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in EDIT_KINDS]
    if unknown or not kinds:
        raise ProbeError(f"unknown edit kind(s) {unknown}; use {', '.join(EDIT_KINDS)}")
    return kinds


def parse_openings(value: str, side: str) -> tuple[str, ...]:
    """Openings from a comma-separated list or an openings JSON file (its ``side`` list)."""
    path = Path(value)
    if path.suffix == ".json" or path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ProbeError(f"openings file not found: {path}") from None
        except (OSError, ValueError) as exc:
            raise ProbeError(f"cannot read openings file {path}: {exc}") from None
        items = data.get(side) if isinstance(data, dict) else data
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ProbeError(f"openings file {path}: needs a list of strings under {side!r}")
    else:
        items = value.split(",")
    openings = tuple(i.strip() for i in items if i.strip())
    if not openings:
        raise ProbeError(f"no {side} openings given in {value!r}")
    return openings


def user_openings(config: AuditConfig) -> MarginConfig | None:
    """The openings the user gave (either side may fall back to the default), or None."""
    if not (config.refusal_openings or config.compliance_openings):
        return None
    default = MarginConfig.default()
    refusal = (
        parse_openings(config.refusal_openings, "refusal")
        if config.refusal_openings
        else default.refusal
    )
    compliance = (
        parse_openings(config.compliance_openings, "compliance")
        if config.compliance_openings
        else default.compliance
    )
    return MarginConfig(refusal, compliance, "user")


def check_config(config: AuditConfig) -> None:
    """Every setting that can be checked before any data or model is touched."""
    build_attributor(config)
    user_openings(config)
    build_attack(config)
    for name in ("batch_size", "max_new_tokens", "top_k_triggers", "max_queries", "min_support"):
        if getattr(config, name) < 1:
            raise ProbeError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("ig_steps", "shapley_samples", "lime_samples", "threads", "max_prompts"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ProbeError(f"--{name.replace('_', '-')} must be at least 1")
    if config.fresh and config.resume:
        raise ProbeError("--fresh and --resume exclude each other")


# ------------------------------------------------------------------ per-prompt stage machinery


@dataclass
class Stage:
    """Where a per-prompt stage keeps its records: the file, and per-rank parts beside it.

    ``path`` None keeps nothing (the Python API's in-memory run). In a multi-process run rank
    r > 0 appends to ``parts/NAME.rankR``; rank 0 merges the parts into ``path`` at the end.
    """

    name: str
    path: Path | None = None
    parts: Path | None = None

    def _part(self, rank: int) -> Path:
        assert self.path is not None and self.parts is not None
        return self.parts / f"{self.path.name}.rank{rank}"

    def read(self) -> list[dict]:
        """Everything already written (file and parts), a kill's cut-off last line dropped."""
        if self.path is None:
            return []
        records = read_appended(self.path)
        if self.parts is not None and self.parts.is_dir():
            for part in sorted(self.parts.glob(f"{self.path.name}.rank*")):
                records += read_appended(part)
        return records

    def appender(self, world: World) -> Appender | None:
        if self.path is None:
            return None
        if world.is_main:
            return Appender(self.path)
        assert self.parts is not None
        self.parts.mkdir(parents=True, exist_ok=True)
        return Appender(self._part(world.rank))

    def finish(self, records: list[dict]) -> None:
        """Rank 0: the stage's file as the full record list, in order; parts removed."""
        if self.path is None:
            return
        write_jsonl(self.path, records)
        if self.parts is not None and self.parts.is_dir():
            for part in self.parts.glob(f"{self.path.name}.rank*"):
                part.unlink()
            if not any(self.parts.iterdir()):
                self.parts.rmdir()


@dataclass
class StageOutput:
    """A per-prompt stage's records by prompt id, how many were reused, and its failures."""

    records: dict[str, dict]
    reused: int
    failures: list[dict]


# A stage splits its prompts into CHUNK_GROUPS chunks or a multiple of it, so that 2, 4 or 8
# processes get equal shares: 40 prompts in batches of 16 were 3 chunks, 24 prompts for one rank
# and 16 for the other (at most 1.67x with two processes); they are now 8 chunks of 5, and 200
# prompts are 16 chunks of 12 or 13, not 13 of 16. Fewer than CHUNK_GROUPS * MIN_CHUNK_SIZE
# prompts make 4, 2 or 1 chunks (a power of two, so still equal shares) of at least
# MIN_CHUNK_SIZE: the attack's 28 prompts of a 40-prompt audit were 7 chunks of 4 (4 for one
# rank, 3 for the other) and are now 8 of 3 or 4.
CHUNK_GROUPS = 8
MIN_CHUNK_SIZE = 3


def chunks_of(prompts: Sequence[Prompt], size: int) -> list[list[Prompt]]:
    """The stage's fixed chunks: at most ``size`` prompts each, their sizes differing by at most
    one, and a multiple of ``CHUNK_GROUPS`` of them (of a smaller power of two where that would
    leave chunks under ``MIN_CHUNK_SIZE`` prompts).

    They depend on the prompts and ``size`` only, never on the number of processes, so every
    world size batches the same prompts together and gets the same numbers.
    """
    count = len(prompts)
    if not count:
        return []
    groups = CHUNK_GROUPS
    while groups > 1 and count < groups * MIN_CHUNK_SIZE:
        groups //= 2
    needed = -(-count // max(1, size))
    n_chunks = -(-needed // groups) * groups
    if n_chunks > count:  # batches smaller than MIN_CHUNK_SIZE: one prompt a chunk
        n_chunks = count
    small, extra = divmod(count, n_chunks)
    bounds = [0]
    for k in range(n_chunks):
        bounds.append(bounds[-1] + small + (k < extra))
    return [list(prompts[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def costliest_first(chunks: Sequence[Sequence[Prompt]]) -> list[int]:
    """Chunk indices in the order ranks should claim them: longest requests first (ties in
    chunk order), so the chunks left for the end, when one rank may wait for the other, are
    the cheap ones. Only the order changes, never a chunk, so results do not."""
    return sorted(range(len(chunks)), key=lambda k: -sum(len(p.prompt) for p in chunks[k]))


def _progress(
    chunks: list[list[Prompt]], world: World, name: str, show: bool
) -> Iterator[list[Prompt]]:
    """The chunks this rank claims (``World.share``), with a progress bar on rank 0 (which
    counts its own chunks: how many of the total the others take is known only at the end)."""
    bar = tqdm(
        total=len(chunks) if world.size == 1 else None,
        desc=name if world.size == 1 else f"{name} (rank 0)",
        unit="chunk",
        disable=not (show and world.is_main),
    )
    order = costliest_first(chunks)
    try:
        for index in world.share(len(chunks)):
            yield chunks[order[index]]
            bar.update(1)
    finally:
        bar.close()


def _guarded(
    stage: str, compute: Callable[[list[Prompt]], list[dict]], chunk: list[Prompt]
) -> tuple[list[dict], list[dict]]:
    """``compute(chunk)``; if it fails, prompt by prompt, recording the prompts that fail."""
    try:
        return compute(chunk), []
    except Exception as exc:  # noqa: BLE001 - one prompt's failure is data, not a crash
        if len(chunk) == 1:
            return [], [{"stage": stage, "id": chunk[0].id, "error": describe_error(exc)}]
    records: list[dict] = []
    failures: list[dict] = []
    for prompt in chunk:
        done, failed = _guarded(stage, compute, [prompt])
        records += done
        failures += failed
    return records, failures


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def run_chunks(
    stage: Stage,
    prompts: Sequence[Prompt],
    compute: Callable[[list[Prompt]], list[dict]],
    *,
    batch_size: int,
    world: World,
    progress: bool = False,
) -> StageOutput:
    """Run a per-prompt stage in fixed chunks, skipping prompts whose records exist.

    Records are appended (and flushed) chunk by chunk; chunks are shared out across ranks.
    """
    ids = {p.id for p in prompts}
    done = world.on_main(lambda: {r["id"]: r for r in stage.read() if r.get("id") in ids})
    chunks = chunks_of(prompts, batch_size)
    pending = [c for c in chunks if any(p.id not in done for p in c)]

    def work() -> tuple[list[dict], list[dict]]:
        new: list[dict] = []
        failures: list[dict] = []
        appender = stage.appender(world)
        try:
            for chunk in _progress(pending, world, stage.name, progress):
                produced, failed = _guarded(stage.name, compute, chunk)
                fresh = [r for r in produced if r["id"] not in done]
                if appender is not None:
                    appender.write(fresh)
                new += fresh
                failures += failed
        finally:
            if appender is not None:
                appender.close()
        return new, failures

    new, failures = world.together(work)
    gathered = [r for part in world.gather(new) for r in part]
    failures = [f for part in world.gather(failures) for f in part]
    records = {**done, **{r["id"]: r for r in gathered}}
    world.on_main(lambda: stage.finish([records[p.id] for p in prompts if p.id in records]))
    return StageOutput(records, len(done), failures)


# ------------------------------------------------------------------ generate and judge


def response_record(prompt: Prompt, response: str, verdict: Verdict) -> dict:
    """One line of responses.jsonl: the response, the verdict, and both judges' opinions."""
    return {
        "id": prompt.id,
        "prompt": prompt.prompt,
        "label": prompt.label,
        "response": response,
        "judged_refusal": bool(verdict.refusal),
        "judge": verdict.to_record(),
    }


def generate_and_judge(
    subject: Subject,
    judge: RefusalJudge,
    prompts: Sequence[Prompt],
    config: AuditConfig,
    *,
    stage: Stage | None = None,
    world: World | None = None,
    progress: bool = False,
) -> StageOutput:
    """Greedy responses to every prompt and the judge's reading of each (responses.jsonl)."""

    def compute(chunk: list[Prompt]) -> list[dict]:
        responses = subject.generate([p.query for p in chunk], config.max_new_tokens)
        verdicts = judge.verdicts(responses)
        return [
            response_record(p, r, v) for p, r, v in zip(chunk, responses, verdicts, strict=True)
        ]

    return run_chunks(
        stage or Stage("generate"), prompts, compute, batch_size=config.batch_size,
        world=world or World(), progress=progress,
    )  # fmt: skip


# ------------------------------------------------------------------ calibrate


def sharded_margins(
    subject: Subject,
    prompts: Sequence[Prompt],
    margin: MarginConfig,
    batch_size: int,
    world: World,
) -> np.ndarray:
    """Margins of all prompts, computed in the stages' fixed chunks, shared out across ranks."""
    chunks = chunks_of(prompts, batch_size)
    order = costliest_first(chunks)
    mine = world.together(
        lambda: {
            order[j]: subject.prompt_margins([p.query for p in chunks[order[j]]], margin).tolist()
            for j in world.share(len(chunks))
        }
    )
    merged: dict[int, list[float]] = {}
    for part in world.gather(mine):
        merged.update(part)
    return np.asarray([m for k in range(len(chunks)) for m in merged[k]], dtype=np.float64)


def calibrate(
    subject: Subject,
    prompts: Sequence[Prompt],
    responses: dict[str, dict],
    config: AuditConfig,
    *,
    world: World | None = None,
) -> Calibration:
    """Fit the margin's openings to the model's judged responses; set them on ``subject``.

    User-given openings are used as given (their agreement with the judge is still measured).
    """
    world = world or World()
    prompts = [p for p in prompts if p.id in responses]
    refused = [bool(responses[p.id]["judged_refusal"]) for p in prompts]

    def margins_for(margin: MarginConfig) -> np.ndarray:
        return sharded_margins(subject, prompts, margin, config.batch_size, world)

    given = user_openings(config)
    if given is not None:
        score = agreement(margins_for(given), refused)
        n_ref = sum(refused)
        calibration = Calibration(
            given, False, score, score, n_ref, len(refused) - n_ref, "openings given by the user"
        )
    else:
        calibration = calibrate_openings(
            subject.margin_config,
            [responses[p.id]["response"] for p in prompts],
            refused,
            margins_for,
        )
    subject.margin_config = calibration.config
    return calibration


# ------------------------------------------------------------------ attribute


def attribute(
    subject: Subject,
    attributor: Attributor,
    prompts: Sequence[Prompt],
    config: AuditConfig,
    *,
    stage: Stage | None = None,
    world: World | None = None,
    progress: bool = False,
) -> StageOutput:
    """Word attributions of every prompt (and image maps for a VLM's image prompts)."""

    unrelated = unrelated_images(prompts)

    def compute(chunk: list[Prompt]) -> list[dict]:
        records = attributor.attribute(subject, chunk)
        if isinstance(subject, VisionSubject):
            attribute_images(subject, chunk, records, n_steps=8)
            controls = image_controls(subject, chunk, unrelated)
            for record in records:
                if record.id in controls:
                    record.extra["image_controls"] = controls[record.id]
        return [r.to_record() for r in records]

    return run_chunks(
        stage or Stage("attribute"), prompts, compute, batch_size=config.batch_size,
        world=world or World(), progress=progress,
    )  # fmt: skip


def unrelated_images(prompts: Sequence[Prompt]) -> dict[str, Path]:
    """For each image prompt, a deterministic unrelated image: that of the next prompt (in
    order, wrapping round) showing a different image, preferring a prompt of another label."""
    shown = [p for p in prompts if p.image is not None]
    out: dict[str, Path] = {}
    for i, prompt in enumerate(shown):
        others = [shown[(i + k) % len(shown)] for k in range(1, len(shown))]
        others = [o for o in others if o.image is not None and o.image != prompt.image]
        chosen = next((o for o in others if o.label != prompt.label), None)
        chosen = chosen or next(iter(others), None)
        if chosen is not None and chosen.image is not None:
            out[prompt.id] = chosen.image
    return out


def image_controls(
    subject: VisionSubject, prompts: Sequence[Prompt], unrelated: dict[str, Path]
) -> dict[str, dict[str, float | None]]:
    """Each image prompt's margin with its own image, a blank one (same size, mid-grey) and an
    unrelated one (None without one), so a report can tell a text trigger that works whatever
    the image shows from one that needs the image."""
    shown = [p for p in prompts if p.image is not None]
    if not shown:
        return {}
    swapped = [p for p in shown if p.id in unrelated]
    margins = subject.prompt_margins(
        [p.query for p in shown] + [Query(p.prompt, unrelated[p.id]) for p in swapped]
    )
    blank = subject.blank_image_margins([p.query for p in shown])
    other = dict(zip([p.id for p in swapped], margins[len(shown) :], strict=True))
    return {
        p.id: {
            "own": round(float(margins[k]), 6),
            "blank": round(float(blank[k]), 6),
            "unrelated": round(float(other[p.id]), 6) if p.id in other else None,
        }
        for k, p in enumerate(shown)
    }


def image_control_metrics(
    prompts: Sequence[Prompt], attributions: Sequence[WordAttribution], refused: dict[str, bool]
) -> dict:
    """``image_controls`` over image prompts: mean margin per image, and the share of refused
    harmful prompts still refused (margin > 0) with a blank / an unrelated image."""
    label = {p.id: p.label for p in prompts}
    rows = [(a.id, a.extra["image_controls"]) for a in attributions if "image_controls" in a.extra]
    if not rows:
        return {}
    out: dict[str, float | int | None] = {"n_prompts": len(rows)}
    for name in ("own", "blank", "unrelated"):
        values = [c[name] for _, c in rows if c.get(name) is not None]
        out[f"mean_margin_{name}"] = float(np.mean(values)) if values else None
    refused_harmful = [c for i, c in rows if label.get(i) == "harmful" and refused.get(i)]
    out["n_refused_harmful"] = len(refused_harmful)
    for name in ("blank", "unrelated"):
        kept = [c[name] > 0 for c in refused_harmful if c.get(name) is not None]
        out[f"still_refused_{name}"] = float(np.mean(kept)) if kept else None
    return out


def attributions_of(output: StageOutput, prompts: Sequence[Prompt]) -> list[WordAttribution]:
    """The typed attributions, in prompt order (from the records, as a resumed run reads them)."""
    return [
        WordAttribution.from_record(output.records[p.id]) for p in prompts if p.id in output.records
    ]


# ------------------------------------------------------------------ lexicon


def build_lexicon(attributions: Sequence[WordAttribution], config: AuditConfig) -> TriggerLexicon:
    """The ranked trigger lexicon fitted on all attributions."""
    return (
        LexiconBuilder(min_support=config.min_support, seed=config.seed).fit(attributions).lexicon_
    )


def load_data_cues(config: AuditConfig) -> TriggerLexicon | None:
    """The data-level cue lexicon to compare the model's triggers with, if any.

    ``--data-cues`` names a lexicon file (``probe lexicon --dataset ...``) or a shipped one by
    stem (e.g. ``vlguard_cues``). A built-in model's default is the cue lexicon of its own
    training set.
    """
    if config.data_cues:
        path = Path(config.data_cues)
        if not path.is_file() and not path.suffix:
            path = lexicon_path(f"{config.data_cues}.json")
        return TriggerLexicon.from_json(path)
    builtin = builtin_model(config.model)
    if builtin is None:
        return None
    train = builtin.training_prompts(config.seed)
    miner = DataCueMiner(view="any").fit([p.prompt for p in train], [p.label for p in train])
    return miner.lexicon_


# ------------------------------------------------------------------ attack

_ATTACK_FIELDS = {f.name for f in fields(AttackRecord)}


def attack_record(record: dict) -> AttackRecord:
    """An attacks.jsonl line back as an ``AttackRecord``."""
    return AttackRecord(**{k: v for k, v in record.items() if k in _ATTACK_FIELDS})


def attack(
    subject: Subject,
    judge: RefusalJudge,
    lexicon: TriggerLexicon,
    prompts: Sequence[Prompt],
    attributions: Sequence[WordAttribution],
    refused: dict[str, bool],
    config: AuditConfig,
    *,
    stage: Stage | None = None,
    log: Stage | None = None,
    world: World | None = None,
    progress: bool = False,
) -> tuple[AttackResult, int, list[dict]]:
    """The one-word attack, chunk by chunk: (result, prompts reused, failures).

    ``stage`` holds the verified edits (attacks.jsonl); ``log`` one line per finished chunk
    (which prompts it attacked, its queries and notes), because a prompt with no verified edit
    leaves no edit line. Edits of a chunk the log does not list are from a killed run and are
    dropped; that chunk is redone.
    """
    world = world or World()
    stage = stage or Stage("attack")
    log = log or Stage("attack-chunks")
    runner = build_attack(config)
    by_id = {a.id: a for a in attributions}
    # Only the prompts the attack pushes are chunked, so every chunk (and rank) gets real work.
    prompts = [p for p in prompts if target_for(p, refused.get(p.id)) is not None]

    def previous() -> tuple[list[dict], list[dict]]:
        entries = log.read()
        finished = {i for e in entries for i in e["ids"]}
        edits = [r for r in stage.read() if r.get("id") in finished]
        if stage.path is not None:
            stage.finish(edits)
        return entries, edits

    entries, edits = world.on_main(previous)
    finished = {i for e in entries for i in e["ids"]}
    reused = len(finished & {p.id for p in prompts})

    def compute(chunk: list[Prompt]) -> list[dict]:
        result = runner.run(
            subject, judge, lexicon, chunk, [by_id[p.id] for p in chunk if p.id in by_id],
            refused,
        )  # fmt: skip
        records = [r.to_record() for r in result.records]
        entry = {
            "id": chunk[0].id,
            "ids": [p.id for p in chunk],
            "attacked": result.attacked,
            "queries": result.queries,
            "notes": result.notes,
        }
        return [{"entry": entry, "edits": records}]

    chunks = chunks_of(prompts, config.batch_size)
    pending = [c for c in chunks if any(p.id not in finished for p in c)]

    def work() -> tuple[list[dict], list[dict], list[dict]]:
        new_edits: list[dict] = []
        new_entries: list[dict] = []
        failures: list[dict] = []
        edit_out, log_out = stage.appender(world), log.appender(world)
        try:
            for chunk in _progress(pending, world, "attack", progress):
                todo = [p for p in chunk if p.id not in finished]
                outputs, failed = _guarded(
                    "attack", compute, todo if len(todo) < len(chunk) else chunk
                )
                for output in outputs:
                    if edit_out is not None:
                        edit_out.write(output["edits"])
                    if log_out is not None:
                        log_out.write([output["entry"]])
                    new_edits += output["edits"]
                    new_entries.append(output["entry"])
                failures += failed
        finally:
            for handle in (edit_out, log_out):
                if handle is not None:
                    handle.close()
        return new_edits, new_entries, failures

    new_edits, new_entries, failures = world.together(work)
    entries = entries + [e for part in world.gather(new_entries) for e in part]
    edits = edits + [r for part in world.gather(new_edits) for r in part]
    failures = [f for part in world.gather(failures) for f in part]
    order = {p.id: i for i, p in enumerate(prompts)}
    edits.sort(key=lambda r: order.get(r["id"], len(order)))
    entries.sort(key=lambda e: order.get(e["id"], len(order)))

    def finish() -> None:
        stage.finish(edits)
        log.finish(entries)

    world.on_main(finish)
    records = [attack_record(r) for r in edits]
    attacked = {i: t for e in entries for i, t in e["attacked"].items()}
    result = AttackResult(
        records=records,
        attacked=attacked,
        flipped_ids={r.id for r in records if r.flipped},
        queries=sum(e["queries"] for e in entries),
        notes=sorted({n for e in entries for n in e["notes"]}),
    )
    return result, reused, failures


# ------------------------------------------------------------------ the Python API


@dataclass
class StageResults:
    """What the stages up to attribution found for a set of prompts (no files written)."""

    subject: Subject
    prompts: list[Prompt]
    responses: dict[str, dict]
    calibration: Calibration
    attributions: list[WordAttribution]


def attribute_prompts(config: AuditConfig, *, progress: bool = False) -> StageResults:
    """Load, generate and judge, calibrate and attribute in memory, as ``probe audit`` does."""
    check_config(config)
    prompts = load_audit_prompts(config)
    subject = load_subject(config)
    prompts = prepare_prompts(subject, prompts, config.method)
    responses = generate_and_judge(subject, build_judge(config), prompts, config, progress=progress)
    calibration = calibrate(subject, prompts, responses.records, config)
    output = attribute(subject, build_attributor(config), prompts, config, progress=progress)
    return StageResults(
        subject, prompts, responses.records, calibration, attributions_of(output, prompts)
    )
