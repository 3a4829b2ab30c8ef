"""Typed records of a run directory, as ``load_run`` reads them back (the report and
``probe compare`` both use them).

The run directory is written by other stages and may be partial, old, hand-made or damaged, so
each ``from_record`` here is tolerant: a field of the wrong type becomes "unknown" (``None`` or
empty) and is reported in ``problems``, never a crash. Fields a record does not model are kept
in ``extra`` so newer writers (judge opinions, constraint values, ...) still show up. Where the
pipeline has a strict type for a line (``WordAttribution``), the record read back is that type,
wrapped in a view that makes the unknowns explicit; ``to_record`` gives the line back.

Run-directory contract (what the report needs; everything else is optional; README "Contracts"):

- ``summary.json``: an object; ``schema_version`` (absent: 0; newer than ``SCHEMA_VERSION`` is
  refused), ``model``, ``status``, ``metrics`` (name -> number, or an object with ``value`` and
  optional ``ci_low``/``ci_high``), ``counts``, ``notes``, ...
- ``attributions.jsonl``: ``id``, ``prompt``, ``words``, ``scores`` (same length), optional
  ``label``, ``spans``, ``margin``, ``method``, ``image``, ``image_map`` (2-D numbers).
- ``responses.jsonl``: ``id``, ``response``, ``judged_refusal``.
- ``attacks.jsonl``: ``id``, ``original``, ``variant``, ``old_word``, ``new_word``,
  ``margin_before``/``margin_after``, ``flipped``, ``judged_refusal_before``/``_after``; optional
  ``target``, ``position``, ``kind``, ``constraints``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from probe.attribution.base import WordAttribution
from probe.errors import ProbeError
from probe.lexicon.table import DIRECTIONS, Direction

SCHEMA_VERSION = 1
"""The summary.json schema this probe writes and reads (``schema_version``; files without it
are version 0, from before it was recorded)."""


def number(value: Any) -> float | None:
    """A finite float, or None (for missing, null, NaN, booleans and non-numeric values)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return result if math.isfinite(result) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if number(value) is not None and float(value).is_integer() else None


def _text(value: Any) -> str | None:
    """Strings stay strings, numbers become text; anything else (lists, objects) is unknown."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _texts(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [t for t in (_text(v) for v in value) if t is not None]


def _scalars(value: Any) -> dict[str, str | int | float | bool | None]:
    """The scalar items of an object (nested values are dropped)."""
    if not isinstance(value, dict):
        return {}
    return {
        str(k): v for k, v in value.items() if v is None or isinstance(v, str | int | float | bool)
    }


def normal_label(value: Any) -> str | None:
    """``harmful`` / ``benign`` (also from ``unsafe`` / ``safe``), other labels lower-cased."""
    text = _text(value)
    if text is None:
        return None
    text = text.lower()
    return {"unsafe": "harmful", "safe": "benign"}.get(text, text)


def _extra(record: dict, known: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in known}


def _known(cls: type) -> frozenset[str]:
    """The record keys a record type reads into its own fields (all but ``extra``)."""
    return frozenset(f.name for f in fields(cls) if f.name != "extra")


def _present(record: Any) -> dict[str, Any]:
    """A typed record's known fields that are set, then its ``extra`` items: the JSON line
    it was read from, up to the values it could not use."""
    out = {f.name: getattr(record, f.name) for f in fields(record) if f.name != "extra"}
    out = {k: v for k, v in out.items() if v not in (None, {})}
    return out | record.extra


@dataclass(frozen=True)
class AttributionView:
    """A line of attributions.jsonl read back: the pipeline's ``WordAttribution`` (``record``)
    plus the image fields of a VLM run, validated.

    The line may lack or garble what the pipeline always writes, so ``margin``, ``spans`` and
    ``method`` read as None when unknown (``record`` then holds NaN, an empty list, ""). Fields
    the record does not model stay in ``record.extra``, as the pipeline wrote them.
    """

    record: WordAttribution
    image: str | None = None
    image_map: list[list[float]] | None = None
    text_reliance: float | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def prompt(self) -> str:
        return self.record.prompt

    @property
    def label(self) -> str | None:
        return self.record.label

    @property
    def words(self) -> list[str]:
        return self.record.words

    @property
    def scores(self) -> list[float]:
        return self.record.scores

    @property
    def margin(self) -> float | None:
        return number(self.record.margin)

    @property
    def spans(self) -> list[tuple[int, int]] | None:
        return self.record.spans if self.record.spans or not self.record.words else None

    @property
    def method(self) -> str | None:
        return self.record.method or None

    def to_record(self) -> dict:
        """The line as the pipeline writes it (``WordAttribution.to_record``)."""
        return self.record.to_record()

    @classmethod
    def from_record(cls, record: Any) -> AttributionView | None:
        """The line read tolerantly, or None when it has no words/scores pair a heatmap could
        draw."""
        if not isinstance(record, dict):
            return None
        words, scores = record.get("words"), record.get("scores")
        if not isinstance(words, list) or not isinstance(scores, list):
            return None
        if len(words) != len(scores):
            return None
        prompt = _text(record.get("prompt"))
        words = [_text(w) or "" for w in words]
        margin = number(record.get("margin"))
        core = _known(WordAttribution)
        attribution = WordAttribution(
            id=_text(record.get("id")) or "?",
            prompt=prompt if prompt is not None else " ".join(words),
            label=normal_label(record.get("label")),
            words=words,
            spans=_spans(record.get("spans"), prompt, len(words)) or [],
            scores=[number(s) or 0.0 for s in scores],
            margin=math.nan if margin is None else margin,
            method=_text(record.get("method")) or "",
            extra={k: v for k, v in record.items() if k not in core},
        )
        return cls(
            attribution,
            image=_text(record.get("image")),
            image_map=_grid(record.get("image_map")),
            text_reliance=number(record.get("text_reliance")),
        )


def _spans(value: Any, prompt: str | None, n_words: int) -> list[tuple[int, int]] | None:
    """Word character spans, if they are ordered, in range and one per word; else None."""
    if prompt is None or not isinstance(value, list) or len(value) != n_words:
        return None
    spans: list[tuple[int, int]] = []
    for item in value:
        if not (isinstance(item, list | tuple) and len(item) == 2):
            return None
        start, end = _int(item[0]), _int(item[1])
        if start is None or end is None or not 0 <= start <= end <= len(prompt):
            return None
        if spans and spans[-1][1] > start:
            return None
        spans.append((start, end))
    return spans


def _grid(value: Any) -> list[list[float]] | None:
    """A non-empty rectangular 2-D grid of numbers (non-finite values become 0), or None."""
    if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
        return None
    width = len(value[0])
    if width == 0 or any(len(row) != width for row in value):
        return None
    grid = []
    for row in value:
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in row):
            return None
        grid.append([number(v) or 0.0 for v in row])
    return grid


@dataclass(frozen=True)
class ResponseRecord:
    """The model's response to one prompt and the judge's verdict (a line of responses.jsonl)."""

    id: str
    prompt: str | None
    label: str | None
    response: str | None
    judged_refusal: bool | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict:
        """The line, without the fields it lacked or could not use."""
        return _present(self)

    @classmethod
    def from_record(cls, record: Any) -> ResponseRecord | None:
        """The line read tolerantly, or None when it has no id."""
        if not isinstance(record, dict) or _text(record.get("id")) is None:
            return None
        return cls(
            id=str(_text(record["id"])),
            prompt=_text(record.get("prompt")),
            label=normal_label(record.get("label")),
            response=_text(record.get("response")),
            judged_refusal=_bool(record.get("judged_refusal")),
            extra=_extra(record, _known(cls)),
        )


@dataclass(frozen=True)
class EditRecord:
    """One verified one-word edit (a line of attacks.jsonl), read tolerantly.

    The pipeline writes these lines from ``probe.attack.records.AttackRecord``, whose fields
    are all required; here each field the report shows may be unknown (None), as in older or
    hand-made lines, and the pipeline's further fields stay in ``extra``. For a complete line,
    ``AttackRecord.from_record(edit.to_record())`` is the pipeline's record.

    ``target`` is the direction the edit pushed toward: "compliance" (attack on a refused
    prompt) or "refusal" (over-refusal of an answered one); derived from the verdict or margin
    before the edit when the line does not say. ``constraints`` holds each constraint's value
    when the line groups them in one ``constraints`` object.
    """

    id: str
    label: str | None
    target: Direction
    original: str
    variant: str
    position: int | None
    old_word: str | None
    new_word: str | None
    kind: str | None
    source: str | None
    margin_before: float | None
    margin_after: float | None
    flipped: bool
    judged_refusal_before: bool | None
    judged_refusal_after: bool | None
    response_after: str | None
    queries: int | None
    constraints: dict[str, str | int | float | bool | None]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict:
        """The line, without the fields it lacked or could not use."""
        return _present(self)

    @classmethod
    def from_record(cls, record: Any) -> EditRecord | None:
        """The line read tolerantly (None when it is not an object)."""
        if not isinstance(record, dict):
            return None
        before = _bool(record.get("judged_refusal_before"))
        margin_before = number(record.get("margin_before"))
        target: Direction
        if record.get("target") == "refusal":
            target = "refusal"
        elif record.get("target") == "compliance":
            target = "compliance"
        elif before is not None:
            target = "compliance" if before else "refusal"
        else:
            target = "compliance" if margin_before is None or margin_before > 0 else "refusal"
        position = _int(record.get("position"))
        return cls(
            id=_text(record.get("id")) or "?",
            label=normal_label(record.get("label")),
            target=target,
            original=_text(record.get("original")) or "",
            variant=_text(record.get("variant")) or "",
            position=position if position is not None and position >= 0 else None,
            old_word=_text(record.get("old_word")),
            new_word=_text(record.get("new_word")),
            kind=_text(record.get("kind")),
            source=_text(record.get("source")),
            margin_before=margin_before,
            margin_after=number(record.get("margin_after")),
            flipped=record.get("flipped") is True,
            judged_refusal_before=before,
            judged_refusal_after=_bool(record.get("judged_refusal_after")),
            response_after=_text(record.get("response_after")),
            queries=_int(record.get("queries")),
            constraints=_scalars(record.get("constraints")),
            extra=_extra(record, _known(cls)),
        )


@dataclass(frozen=True)
class Metric:
    """A headline number, with its interval when the run recorded one."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None

    @classmethod
    def from_value(cls, value: Any) -> Metric:
        """From a number, or an object ``{value|estimate, ci_low|low, ci_high|high}``."""
        if isinstance(value, dict):
            point = value.get("value", value.get("estimate"))
            return cls(
                number(point),
                number(value.get("ci_low", value.get("low"))),
                number(value.get("ci_high", value.get("high"))),
            )
        return cls(number(value))


@dataclass(frozen=True)
class Calibration:
    """How the decision margin's openings were chosen (``summary.json["margin_calibration"]``)."""

    source: str | None
    calibrated: bool | None
    refusal_openings: list[str]
    compliance_openings: list[str]
    agreement_default: float | None
    agreement_final: float | None
    n_judged_refused: int | None
    n_judged_complied: int | None
    note: str | None

    @classmethod
    def from_record(cls, record: dict) -> Calibration:
        return cls(
            source=_text(record.get("source")),
            calibrated=_bool(record.get("calibrated")),
            refusal_openings=_texts(record.get("refusal_openings")),
            compliance_openings=_texts(record.get("compliance_openings")),
            agreement_default=number(record.get("agreement_default")),
            agreement_final=number(record.get("agreement_final")),
            n_judged_refused=_int(record.get("n_judged_refused")),
            n_judged_complied=_int(record.get("n_judged_complied")),
            note=_text(record.get("note")),
        )


@dataclass(frozen=True)
class CueSide:
    """One direction of the model-vs-data comparison: each side's top words and the shared."""

    model: list[str]
    data: list[str]
    shared: list[str]


@dataclass(frozen=True)
class CueComparison:
    """Model triggers vs data cues (``summary.json["data_cue_comparison"]``)."""

    k: int | None
    overlap_at_k: dict[str, float | None]
    top: dict[str, CueSide]
    n_common_words: int | None
    rank_correlation: float | None

    @classmethod
    def from_record(cls, record: dict) -> CueComparison:
        overlap = record.get("overlap_at_k")
        overlap = overlap if isinstance(overlap, dict) else {}
        top = record.get("top")
        top = top if isinstance(top, dict) else {}
        sides: dict[str, CueSide] = {}
        for direction in DIRECTIONS:
            side = top.get(direction)
            side = side if isinstance(side, dict) else {}
            sides[direction] = CueSide(
                _texts(side.get("model")), _texts(side.get("data")), _texts(side.get("shared"))
            )
        return cls(
            k=_int(record.get("k")),
            overlap_at_k={d: number(overlap.get(d)) for d in DIRECTIONS},
            top=sides,
            n_common_words=_int(record.get("n_common_words")),
            rank_correlation=number(record.get("rank_correlation")),
        )


@dataclass(frozen=True)
class RunSummary:
    """summary.json, typed. ``problems`` lists the fields that had the wrong type (ignored).

    ``record`` is the object as read: summary.json also carries free-form parts (``config``,
    ``attack_metrics``, ``failures``, ...) that are reported as recorded. ``schema_version``
    is 0 for files written before probe recorded it.
    """

    schema_version: int
    model: str | None
    status: str | None
    model_path: str | None
    error: str | None
    config: dict[str, Any]
    counts: dict[str, str | int | float | bool | None]
    metrics: dict[str, Metric]
    versions: dict[str, str | int | float | bool | None]
    timings_s: dict[str, str | int | float | bool | None]
    stages_completed: list[str]
    ground_truth_triggers: dict[str, str]
    calibration: Calibration | None
    cue_comparison: CueComparison | None
    notes: list[str]
    resumed: Any
    world_size: int | None
    problems: list[str]
    record: dict[str, Any] = field(default_factory=dict)

    # key -> the JSON type it must have, for the problem notes
    SHAPES: ClassVar[dict[str, tuple[type, str]]] = {
        "model": (str, "a string"),
        "status": (str, "a string"),
        "model_path": (str, "a string"),
        "error": (str, "a string"),
        "config": (dict, "an object"),
        "counts": (dict, "an object"),
        "metrics": (dict, "an object"),
        "versions": (dict, "an object"),
        "timings_s": (dict, "an object"),
        "stages_completed": (list, "a list"),
        "ground_truth_triggers": (dict, "an object"),
        "margin_calibration": (dict, "an object"),
        "data_cue_comparison": (dict, "an object"),
        "notes": (list, "a list"),
    }

    def to_record(self) -> dict[str, Any]:
        """The summary.json object as read."""
        return dict(self.record)

    @classmethod
    def from_record(cls, record: dict, source: str = "summary.json") -> RunSummary:
        """The object read tolerantly; a ``schema_version`` newer than this probe's is a
        ``ProbeError`` naming ``source`` (its fields may mean something else)."""
        version = _int(record.get("schema_version", 0))
        if version is not None and version > SCHEMA_VERSION:
            raise ProbeError(
                f"{source} has schema_version {version}, newer than this probe reads "
                f"({SCHEMA_VERSION}); upgrade probe to read this run"
            )
        problems = [
            f"summary.json: '{name}' should be {what}, not {type(record[name]).__name__}; ignored"
            for name, (kind, what) in cls.SHAPES.items()
            if record.get(name) is not None and not isinstance(record[name], kind)
        ]
        if version is None or version < 0:
            problems.append("summary.json: 'schema_version' is not a version number; read as 0")
            version = 0

        def get(name: str) -> Any:
            value = record.get(name)
            kind = cls.SHAPES[name][0]
            return value if isinstance(value, kind) else None

        metrics = get("metrics") or {}
        truth = get("ground_truth_triggers") or {}
        calibration, comparison = get("margin_calibration"), get("data_cue_comparison")
        return cls(
            schema_version=version,
            model=get("model"),
            status=get("status"),
            model_path=get("model_path"),
            error=get("error"),
            config=get("config") or {},
            counts=_scalars(get("counts")),
            metrics={str(k): Metric.from_value(v) for k, v in metrics.items()},
            versions=_scalars(get("versions")),
            timings_s=_scalars(get("timings_s")),
            stages_completed=_texts(get("stages_completed")),
            ground_truth_triggers={
                str(k): t for k, v in truth.items() if (t := _text(v)) is not None
            },
            calibration=Calibration.from_record(calibration) if calibration else None,
            cue_comparison=CueComparison.from_record(comparison) if comparison else None,
            notes=_texts(get("notes")),
            resumed=record.get("resumed"),
            world_size=_int(record.get("world_size")),
            problems=problems,
            record=dict(record),
        )
