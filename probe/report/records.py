"""Typed records of a run directory, as the report reads them back.

The run directory is written by other stages and may be partial, old, hand-made or damaged, so
each ``from_record`` here is tolerant: a field of the wrong type becomes "unknown" (``None`` or
empty) and is reported in ``problems``, never a crash. Fields the report does not know are kept
in ``extra`` so newer writers (judge opinions, constraint values, ...) still show up.

Run-directory contract (what the report needs; everything else is optional):

- ``summary.json``: an object; ``model``, ``status``, ``metrics`` (name -> number, or an object
  with ``value`` and optional ``ci_low``/``ci_high``), ``counts``, ``notes``, ...
- ``attributions.jsonl``: ``id``, ``prompt``, ``words``, ``scores`` (same length), optional
  ``label``, ``spans``, ``margin``, ``method``, ``image``, ``image_map`` (2-D numbers).
- ``responses.jsonl``: ``id``, ``response``, ``judged_refusal``.
- ``attacks.jsonl``: ``id``, ``original``, ``variant``, ``old_word``, ``new_word``,
  ``margin_before``/``margin_after``, ``flipped``, ``judged_refusal_before``/``_after``; optional
  ``target``, ``position``, ``kind``, ``constraints``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from probe.lexicon.table import DIRECTIONS, Direction


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


@dataclass(frozen=True)
class AttributionRecord:
    """One prompt's word attributions (a line of attributions.jsonl)."""

    id: str
    prompt: str
    label: str | None
    words: list[str]
    scores: list[float]
    spans: list[tuple[int, int]] | None
    margin: float | None
    method: str | None
    image: str | None
    image_map: list[list[float]] | None
    text_reliance: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    KNOWN = frozenset(
        "id prompt label words scores spans margin method image image_map text_reliance".split()
    )

    @classmethod
    def from_record(cls, record: Any) -> AttributionRecord | None:
        """The record, or None when it has no words/scores pair a heatmap could draw."""
        if not isinstance(record, dict):
            return None
        words, scores = record.get("words"), record.get("scores")
        if not isinstance(words, list) or not isinstance(scores, list):
            return None
        if len(words) != len(scores):
            return None
        prompt = _text(record.get("prompt"))
        words = [_text(w) or "" for w in words]
        return cls(
            id=_text(record.get("id")) or "?",
            prompt=prompt if prompt is not None else " ".join(words),
            label=normal_label(record.get("label")),
            words=words,
            scores=[number(s) or 0.0 for s in scores],
            spans=_spans(record.get("spans"), prompt, len(words)),
            margin=number(record.get("margin")),
            method=_text(record.get("method")),
            image=_text(record.get("image")),
            image_map=_grid(record.get("image_map")),
            text_reliance=number(record.get("text_reliance")),
            extra=_extra(record, cls.KNOWN),
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

    KNOWN = frozenset("id prompt label response judged_refusal".split())

    @classmethod
    def from_record(cls, record: Any) -> ResponseRecord | None:
        if not isinstance(record, dict) or _text(record.get("id")) is None:
            return None
        return cls(
            id=str(_text(record["id"])),
            prompt=_text(record.get("prompt")),
            label=normal_label(record.get("label")),
            response=_text(record.get("response")),
            judged_refusal=_bool(record.get("judged_refusal")),
            extra=_extra(record, cls.KNOWN),
        )


@dataclass(frozen=True)
class EditRecord:
    """One verified one-word edit (a line of attacks.jsonl).

    ``target`` is the direction the edit pushed toward: "compliance" (attack on a refused
    prompt) or "refusal" (over-refusal of an answered one); derived from the verdict or margin
    before the edit when the line does not say. ``constraints`` holds each constraint's value
    when the attack recorded them.
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

    KNOWN = frozenset(
        "id label target original variant position old_word new_word kind source margin_before "
        "margin_after flipped judged_refusal_before judged_refusal_after response_after queries "
        "constraints".split()
    )

    @classmethod
    def from_record(cls, record: Any) -> EditRecord | None:
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
            extra=_extra(record, cls.KNOWN),
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
    """summary.json, typed. ``problems`` lists the fields that had the wrong type (ignored)."""

    model: str
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
    extra: dict[str, Any] = field(default_factory=dict)

    KNOWN = frozenset(
        "model status model_path error config counts metrics versions timings_s "
        "stages_completed ground_truth_triggers margin_calibration data_cue_comparison notes "
        "resumed world_size".split()
    )
    # field -> the JSON type it must have, for the problem notes
    SHAPES = {
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

    @classmethod
    def from_record(cls, record: dict) -> RunSummary:
        problems = [
            f"summary.json: '{name}' should be {what}, not {type(record[name]).__name__}; ignored"
            for name, (kind, what) in cls.SHAPES.items()
            if record.get(name) is not None and not isinstance(record[name], kind)
        ]

        def get(name: str) -> Any:
            value = record.get(name)
            kind = cls.SHAPES[name][0]
            return value if isinstance(value, kind) else None

        metrics = get("metrics") or {}
        truth = get("ground_truth_triggers") or {}
        calibration, comparison = get("margin_calibration"), get("data_cue_comparison")
        return cls(
            model=get("model") or "?",
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
            extra=_extra(record, cls.KNOWN),
        )
