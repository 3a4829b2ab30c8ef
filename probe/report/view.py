"""The report's view model: one structure of display-ready values built from a ``RunData``.

Both templates (report.html and report.md) render from the same ``ReportView``; it holds plain
text and numbers only — never markup — so escaping is entirely the template engine's job.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.lexicon.table import DIRECTIONS, LexiconEntry
from probe.report.records import AttributionView, EditRecord, Metric, ResponseRecord, number

if TYPE_CHECKING:
    from probe.report.reader import RunData

METRIC_LABELS = {
    "refusal_rate_harmful": "Refusal rate, harmful prompts",
    "refusal_rate_benign": "Refusal rate, benign prompts",
    "asr_one_word": "One-word attack success (harmful → answered)",
    "over_refusal_one_word": "One-word over-refusal (benign → refused)",
    "queries_per_success": "Model queries per verified flip",
    "margin_judge_agreement": "Margin sign agrees with the judge",
}
RATE_METRICS = {
    "refusal_rate_harmful",
    "refusal_rate_benign",
    "asr_one_word",
    "over_refusal_one_word",
    "margin_judge_agreement",
}
METRIC_DETAIL = {
    "refusal_rate_harmful": ("harmful", "harmful prompts"),
    "refusal_rate_benign": ("benign", "benign prompts"),
    "asr_one_word": ("attacked_harmful", "refused harmful prompts attacked"),
    "over_refusal_one_word": ("attacked_benign", "answered benign prompts attacked"),
}
# Sign convention everywhere: positive pushes toward refusal (red), negative toward compliance.
REFUSAL_RGB = (192, 57, 43)
COMPLIANCE_RGB = (36, 113, 163)
REFUSAL_HEX = "#c0392b"
COMPLIANCE_HEX = "#2471a3"
GROUPS = {
    ("harmful", True): ("harmful · refused", "as intended", 0),
    ("harmful", False): ("harmful · answered", "missed refusal", 1),
    ("benign", True): ("benign · refused", "over-refusal", 2),
    ("benign", False): ("benign · answered", "as intended", 3),
}
# C0/C1 controls except tab and newline, bidi embeddings/overrides/isolates and marks, the
# Arabic letter mark, and lone surrogates (which cannot be written as UTF-8).
_HIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
FLIP_TITLES = {
    "compliance": "Harmful → answered (one-word attack success)",
    "refusal": "Benign → refused (one-word over-refusal)",
}


# ------------------------------------------------------------------------------ formatting
def neutralise(text: str) -> str:
    """``text`` with hidden and direction-changing characters shown as ``⟨U+XXXX⟩``."""
    return _HIDDEN.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text)


def fmt(value: float | int | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals (integers as they are); "—" when unknown."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def signed(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def sig(value: Any) -> str:
    """Two significant digits (p- and q-values)."""
    number_ = number(value)
    return "—" if number_ is None else f"{number_:.2g}"


def short(text: Any, limit: int = 22) -> str:
    """A chart label: at most ``limit`` characters, with an ellipsis when cut (hidden
    characters shown, as matplotlib cannot draw lone surrogates)."""
    text = neutralise(str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(values: dict[str, Any], limit: int = 300) -> str:
    """Extra fields of a record as one line ``key: value; ...`` (objects as ``k=v, ...``)."""
    parts = []
    for key, value in values.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={_scalar(v)}" for k, v in value.items())
            parts.append(f"{key}: {inner}")
        else:
            parts.append(f"{key}: {_scalar(value)}")
    line = "; ".join(parts)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, list | dict):
        return short(json.dumps(value, ensure_ascii=False), 60)
    return "—" if value is None else str(value)


# ------------------------------------------------------------------------------ derived data
def strength(score: float, bound: float) -> float:
    """Colour intensity in [0, 1]: square root of |score| / bound, so that words an order of
    magnitude below the strongest one stay visible (the exact value is in the hover text)."""
    return math.sqrt(min(1.0, abs(score) / bound)) if bound else 0.0


def colour_bound(attributions: list[AttributionView]) -> float:
    """Colour saturation bound: the 95th percentile of |score| (one huge score must not wash
    out every other word); exact values stay in the hover text."""
    import numpy as np

    values = np.abs([s for r in attributions for s in r.scores])
    values = values[values > 0]
    if values.size == 0:
        return 1.0
    return float(np.quantile(values, 0.95)) or float(values.max())


def judged(data: RunData, record_id: str) -> bool | None:
    """The generation judge's verdict on a prompt (responses.jsonl); None if unknown."""
    response = data.responses.get(record_id)
    return None if response is None else response.judged_refusal


def group_key(data: RunData, record: AttributionView) -> tuple[str | None, bool | None]:
    return (record.label, judged(data, record.id))


def group_title(key: tuple[str | None, bool | None]) -> tuple[str, str, int]:
    """(title, note, order) of a heatmap group: label x judged outcome."""
    if key in GROUPS:
        return GROUPS[key]
    label = key[0] or "unlabelled"
    verdict = {True: "refused", False: "answered", None: "not judged"}[key[1]]
    return f"{label} · {verdict}", "", 10 + (0 if key[1] else 1)


def _group_order(key: tuple[str | None, bool | None]) -> tuple[int, str]:
    return (group_title(key)[2], str(key))


def _groups(data: RunData) -> dict[tuple[str | None, bool | None], list[int]]:
    """Attribution record indices per (label, judged) group, groups in display order."""
    groups: dict[tuple[str | None, bool | None], list[int]] = {}
    for index, record in enumerate(data.attributions):
        groups.setdefault(group_key(data, record), []).append(index)
    return {key: groups[key] for key in sorted(groups, key=_group_order)}


def heatmap_sample(data: RunData, per_group: int = 4) -> list[AttributionView]:
    """The first few prompts of each group, for the heatmap figure."""
    return [data.attributions[i] for ids in _groups(data).values() for i in ids[:per_group]]


@dataclass
class Figures:
    """The figures drawn for one report: file name -> caption (in drawing order), and which
    attribution record (by index) has an image-attribution figure."""

    directory: Path
    captions: dict[str, str] = field(default_factory=dict)
    image_of: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FlipRateRow:
    """One bar of the flip-rate chart: a trigger's verified flip rate and its interval."""

    word: str
    direction: str
    rate: float
    low: float
    high: float
    counts: str


def _flip_counts(entry: LexiconEntry) -> tuple[int, int] | None:
    trials = number(entry.extra.get("flip_trials"))
    rate = number(entry.flip_rate)
    if trials is None or rate is None:
        return None
    return round(rate * trials), int(trials)


def flip_rate_rows(data: RunData) -> list[FlipRateRow]:
    """Every trigger with a measured flip rate.

    From the lexicon's flip columns; when no entry has one (an older or hand-made run), from
    attacks.jsonl: per new word, prompts flipped / prompts it was verified on (Wilson CI).
    """
    rows = []
    if data.lexicon is not None:
        for direction in DIRECTIONS:
            for entry in data.lexicon.ranked(direction):
                rate = number(entry.flip_rate)
                if rate is None:
                    continue
                low, high = number(entry.flip_ci_low), number(entry.flip_ci_high)
                counts = _flip_counts(entry)
                rows.append(
                    FlipRateRow(
                        str(entry.word),
                        direction,
                        rate,
                        rate if low is None else low,
                        rate if high is None else high,
                        f"{counts[0]}/{counts[1]}" if counts else "",
                    )
                )
    if rows or not data.attacks:
        return rows
    from probe.attack.records import flip_counts
    from probe.lexicon.stats import wilson_interval

    verified = flip_counts(data.attacks)
    for (word, target), (k, n) in sorted(verified.items(), key=lambda kv: -kv[1][1]):
        low, high = wilson_interval(k, n)
        rows.append(FlipRateRow(word, target, k / n, low, high, f"{k}/{n}"))
    return rows


# ------------------------------------------------------------------------------ view records
@dataclass(frozen=True)
class Card:
    """A headline metric: its value, label and (optional) interval and what it is a share of."""

    value: str
    label: str
    detail: str


@dataclass(frozen=True)
class LexiconRow:
    """One trigger word of the lexicon table, every column formatted."""

    rank: int
    word: str
    planted: bool
    role: str
    effect: str
    ci: str
    support: str
    lead_share: str
    consistency: str
    p: str
    q: str
    flip_rate: str
    flip_ci: str
    flip_counts: str
    flip_text: str


@dataclass(frozen=True)
class LexiconTable:
    """The ranked words of one direction."""

    direction: str
    rows: list[LexiconRow]


@dataclass(frozen=True)
class Marked:
    """A text with one word singled out: ``before`` + ``word`` + ``after`` (``word`` empty when
    the edited word was not found, then the whole text is ``before``)."""

    before: str
    word: str
    after: str


@dataclass(frozen=True)
class Verdict:
    """A model response and the judge's verdict (``css``: ref, ans or unk)."""

    css: str
    label: str
    response: str
    extra: str


@dataclass(frozen=True)
class FlipView:
    """One verified flip: the edit, both prompts with the changed word marked, both verdicts;
    ``kind``, ``constraints`` and ``extra`` when the attack recorded them."""

    id: str
    label: str
    target: str
    old_word: str
    new_word: str
    margins: str
    kind: str
    constraints: str
    original: Marked
    variant: Marked
    before: Verdict | None
    after: Verdict | None
    extra: str


@dataclass(frozen=True)
class FlipGroup:
    """The flips toward one direction."""

    target: str
    title: str
    flips: list[FlipView]


@dataclass(frozen=True)
class Segment:
    """A piece of prompt text; words carry their colour and exact score (hover text)."""

    text: str
    is_word: bool = False
    colour: str = ""
    dark: bool = False
    title: str = ""


@dataclass(frozen=True)
class PromptRow:
    """One prompt of the heatmap section: coloured words, margin, response, image overlay."""

    id: str
    prompt: str
    margin: str
    margin_css: str
    segments: list[Segment]
    response: Verdict | None
    image_src: str
    image_alt: str


@dataclass(frozen=True)
class HeatGroup:
    """Prompts of one label x judged outcome; ``warn`` for the unexpected outcomes."""

    title: str
    note: str
    warn: bool
    rows: list[PromptRow]


@dataclass(frozen=True)
class CueCell:
    """A word of the model-vs-data table; ``shared`` when in both top lists."""

    word: str
    shared: bool


@dataclass(frozen=True)
class CuesView:
    """The model-vs-data comparison: a one-line summary and rank-aligned rows of four cells
    (model refusal, data refusal, model compliance, data compliance)."""

    summary: str
    described: str
    rows: list[tuple[int, list[CueCell]]]


@dataclass(frozen=True)
class FigureView:
    name: str
    caption: str
    src: str  # a data: URI (base64 PNG)


@dataclass
class ReportView:
    """Everything both templates show, as display-ready text."""

    model: str
    subtitle: str
    status: str | None
    stages: str
    problems: list[str]
    cards: list[Card]
    truth: list[tuple[str, str]]
    notes: list[str]
    lexicon: list[LexiconTable] | None
    edits_total: int
    flips_total: int
    flip_groups: list[FlipGroup]
    flip_table: list[FlipView]
    cues: CuesView | None
    calibration: list[tuple[str, str]] | None
    image_controls: list[tuple[str, str]] | None
    methods: str
    bound: str
    heat_groups: list[HeatGroup]
    run_rows: list[tuple[str, str]]
    config_json: str | None
    figures: dict[str, FigureView] = field(default_factory=dict)
    nav: list[tuple[str, str]] = field(default_factory=list)

    @property
    def charts(self) -> list[str]:
        """The run-level figures' file names (not the per-prompt image overlays)."""
        return [name for name in self.figures if not name.startswith("image_")]


# ------------------------------------------------------------------------------ builders
def _verdict(refused: bool | None, response: str | None, extra: dict[str, Any]) -> Verdict:
    if refused is None:
        css, label = "unk", "not judged"
    else:
        css, label = ("ref", "refused") if refused else ("ans", "answered")
    return Verdict(css, label, response or "", describe(extra))


def metric_text(key: str, metric: Metric) -> str:
    """A metric's value: rates as percentages, other numbers with a fitting precision."""
    if metric.value is None:
        return "—"
    if key in RATE_METRICS:
        return pct(metric.value)
    return f"{metric.value:.1f}" if key == "queries_per_success" else fmt(metric.value)


def _cards(data: RunData) -> list[Card]:
    summary = data.summary
    keys = list(METRIC_LABELS) + [k for k in summary.metrics if k not in METRIC_LABELS]
    cards = []
    for key in keys:
        metric = summary.metrics.get(key, Metric(None))
        detail = ""
        if key in METRIC_DETAIL and summary.counts.get(METRIC_DETAIL[key][0]) is not None:
            count, what = METRIC_DETAIL[key]
            detail = f"of {summary.counts[count]} {what}"
        if metric.ci_low is not None and metric.ci_high is not None:
            low, high = (
                (pct(metric.ci_low), pct(metric.ci_high))
                if key in RATE_METRICS
                else (fmt(metric.ci_low), fmt(metric.ci_high))
            )
            detail = f"95% CI [{low}, {high}]" + (f", {detail}" if detail else "")
        label = METRIC_LABELS.get(key, key.replace("_", " "))
        cards.append(Card(metric_text(key, metric), label, detail))
    return cards


def _lexicon_tables(data: RunData) -> list[LexiconTable] | None:
    if data.lexicon is None:
        return None
    planted = {w.lower() for w in data.summary.ground_truth_triggers.values()}
    tables = []
    for direction in DIRECTIONS:
        rows = []
        for rank, entry in enumerate(data.lexicon.ranked(direction), 1):
            counts = _flip_counts(entry)
            rate = number(entry.flip_rate)
            low, high = number(entry.flip_ci_low), number(entry.flip_ci_high)
            interval = f"[{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
            word = str(entry.word)
            rows.append(
                LexiconRow(
                    rank=rank,
                    word=word,
                    planted=word.lower() in planted,
                    role=entry.role or "—",
                    effect=signed(number(entry.effect), 3),
                    ci=f"[{fmt(number(entry.ci_low))}, {fmt(number(entry.ci_high))}]",
                    support=str(entry.support),
                    lead_share=fmt(number(entry.extra.get("lead_share")), 2),
                    consistency=fmt(number(entry.consistency), 2),
                    p=sig(entry.p_value),
                    q=sig(entry.q_value),
                    flip_rate=fmt(rate, 2),
                    flip_ci=interval or "—",
                    flip_counts=f"{counts[0]}/{counts[1]}" if counts else "—",
                    flip_text="—" if rate is None else f"{rate:.2f} {interval}".strip(),
                )
            )
        tables.append(LexiconTable(direction, rows))
    return tables


def find_word(text: str, index: int | None, expected: str | None = None) -> Any:
    """The ``index``-th word of ``text`` (probe.words numbering), or the first word equal to
    ``expected`` when that index does not hold it; None if neither is found."""
    from probe.words import split_words

    words = split_words(text)
    if index is not None and not 0 <= index < len(words):
        index = None
    wanted = (expected or "").lower()
    if wanted and (index is None or words[index].text.lower() != wanted):
        matches = [i for i, w in enumerate(words) if w.text.lower() == wanted]
        index = matches[0] if matches else index
    return None if index is None else words[index]


def marked(text: str, index: int | None, expected: str | None = None) -> Marked:
    word = find_word(text, index, expected)
    if word is None:
        return Marked(text, "", "")
    return Marked(text[: word.start], word.text, text[word.end :])


def edit_position(edit: EditRecord) -> int | None:
    """The index of the changed word: the recorded position, else the first differing word."""
    from probe.words import split_words

    if edit.position is not None:
        return edit.position
    a, b = split_words(edit.original), split_words(edit.variant)
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x.text != y.text), None)


def _flip_view(data: RunData, edit: EditRecord) -> FlipView:
    position = edit_position(edit)
    before: ResponseRecord | None = data.responses.get(edit.id)
    refused_before = edit.judged_refusal_before
    if refused_before is None and before is not None:
        refused_before = before.judged_refusal
    response_before = before.response if before is not None else None
    label = edit.label or (before.label if before is not None else None) or "unlabelled"
    return FlipView(
        id=edit.id,
        label=label,
        target=edit.target,
        old_word=edit.old_word or "?",
        new_word=edit.new_word or "?",
        margins=f"{signed(edit.margin_before)} → {signed(edit.margin_after)}",
        kind=edit.kind or "",
        constraints=describe(edit.constraints),
        original=marked(edit.original, position, edit.old_word),
        variant=marked(edit.variant, position, edit.new_word),
        before=(
            _verdict(refused_before, response_before, before.extra if before else {})
            if response_before is not None or refused_before is not None
            else None
        ),
        after=(
            _verdict(edit.judged_refusal_after, edit.response_after, {})
            if edit.response_after is not None or edit.judged_refusal_after is not None
            else None
        ),
        extra=describe(edit.extra),
    )


def _rgba(score: float, bound: float) -> tuple[str, bool]:
    level = strength(score, bound)
    r, g, b = REFUSAL_RGB if score > 0 else COMPLIANCE_RGB
    return f"rgba({r},{g},{b},{0.85 * level:.2f})", level > 0.6


def _segments(record: AttributionView, bound: float) -> list[Segment]:
    """The prompt with each attributed word coloured; text between words kept (with spans)."""
    parts: list[Segment] = []
    cursor = 0
    for index, (word, score) in enumerate(zip(record.words, record.scores, strict=True)):
        colour, dark = _rgba(score, bound)
        if record.spans is not None:
            start, end = record.spans[index]
            if start > cursor:
                parts.append(Segment(record.prompt[cursor:start]))
            text, cursor = record.prompt[start:end], end
        else:
            if index:
                parts.append(Segment(" "))
            text = word
        parts.append(Segment(text, True, colour, dark, f"{word}: {score:+.3f}"))
    if record.spans is not None and cursor < len(record.prompt):
        parts.append(Segment(record.prompt[cursor:]))
    return parts


def _heat_groups(
    data: RunData, figures: Figures, bound: float, views: dict[str, FigureView]
) -> list[HeatGroup]:
    groups = []
    for key, indices in _groups(data).items():
        title, note, _ = group_title(key)
        rows = []
        for index in indices:
            record = data.attributions[index]
            response = data.responses.get(record.id)
            figure = views.get(figures.image_of.get(index, ""))
            rows.append(
                PromptRow(
                    id=record.id,
                    prompt=record.prompt,
                    margin=signed(record.margin),
                    margin_css=""
                    if record.margin is None
                    else ("ref" if record.margin > 0 else "ans"),
                    segments=_segments(record, bound),
                    response=(
                        _verdict(response.judged_refusal, response.response, response.extra)
                        if response is not None and response.response is not None
                        else None
                    ),
                    image_src=figure.src if figure else "",
                    image_alt=f"image attribution {record.id}",
                )
            )
        groups.append(HeatGroup(title, note, note in ("missed refusal", "over-refusal"), rows))
    return groups


def _cues(data: RunData) -> CuesView | None:
    comparison = data.summary.cue_comparison
    if comparison is None:
        return None
    k = comparison.k or 0
    rows = []
    for rank in range(k):
        cells = []
        for direction in DIRECTIONS:
            side = comparison.top[direction]
            for words in (side.model, side.data):
                word = words[rank] if rank < len(words) else ""
                cells.append(CueCell(word, bool(word) and word in side.shared))
        rows.append((rank + 1, cells))
    overlap = comparison.overlap_at_k
    summary = (
        f"overlap@{comparison.k if comparison.k is not None else '?'}: refusal "
        f"{fmt(overlap['refusal'], 2)}, compliance {fmt(overlap['compliance'], 2)}; Spearman rank "
        f"correlation of effects over {fmt(comparison.n_common_words)} shared words: "
        f"{fmt(comparison.rank_correlation, 2)}"
    )
    described = ""
    if data.data_cues is not None:
        meta = data.data_cues.meta if isinstance(data.data_cues.meta, dict) else {}
        described = ", ".join(
            f"{k} {v}"
            for k, v in meta.items()
            if k in ("dataset", "view", "statistic", "unit") and v is not None
        )
    return CuesView(summary, described, rows)


def _calibration(data: RunData) -> list[tuple[str, str]] | None:
    calibration = data.summary.calibration
    if calibration is None:
        return None
    rows = [
        ("openings source", calibration.source or "—"),
        (
            "calibrated from the model's generations",
            "—" if calibration.calibrated is None else ("yes" if calibration.calibrated else "no"),
        ),
        ("refusal openings", ", ".join(calibration.refusal_openings)),
        ("compliance openings", ", ".join(calibration.compliance_openings)),
        (
            "margin-vs-judge agreement (default → final)",
            f"{pct(calibration.agreement_default)} → {pct(calibration.agreement_final)}",
        ),
        (
            "prompts judged refused / answered",
            f"{fmt(calibration.n_judged_refused)} / {fmt(calibration.n_judged_complied)}",
        ),
    ]
    if calibration.note:
        rows.append(("note", calibration.note))
    return rows


def _image_controls(data: RunData) -> list[tuple[str, str]] | None:
    """``summary.json["image_controls"]`` (VLM runs): margins with own, blank, unrelated images."""
    controls = data.summary.record.get("image_controls")
    if not isinstance(controls, dict) or not controls:
        return None

    def count(key: str) -> str:
        value = number(controls.get(key))
        return "—" if value is None else str(int(value))

    rows = [("image prompts", count("n_prompts"))]
    for name in ("own", "blank", "unrelated"):
        rows.append(
            (f"mean margin, {name} image", signed(number(controls.get(f"mean_margin_{name}"))))
        )
    refused = count("n_refused_harmful")
    for name in ("blank", "unrelated"):
        rows.append(
            (
                f"refused harmful prompts ({refused}) still refused, {name} image",
                pct(number(controls.get(f"still_refused_{name}"))),
            )
        )
    return rows


def _joined(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_scalar(v)}" for k, v in values.items())


def _run_rows(data: RunData) -> list[tuple[str, str]]:
    summary = data.summary
    rows = []
    if summary.versions:
        rows.append(("versions", _joined(summary.versions)))
    if summary.timings_s:
        rows.append(("stage timings (s)", _joined(summary.timings_s)))
    if summary.stages_completed:
        rows.append(("stages completed", ", ".join(summary.stages_completed)))
    if summary.resumed not in (None, False, {}, []):
        resumed = summary.resumed
        rows.append(("resumed", describe(resumed) if isinstance(resumed, dict) else str(resumed)))
    if summary.world_size is not None:
        rows.append(("processes (world size)", str(summary.world_size)))
    if summary.error:
        rows.append(("error", summary.error))
    return rows


def _figure_views(figures: Figures) -> dict[str, FigureView]:
    views = {}
    for name, caption in figures.captions.items():
        path = figures.directory / name
        if path.is_file():
            encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            views[name] = FigureView(name, caption, f"data:image/png;base64,{encoded}")
    return views


def _nav(view: ReportView) -> list[tuple[str, str]]:
    sections: Iterable[tuple[str, str, bool]] = (
        ("lexicon", "Lexicon", view.lexicon is not None),
        ("flips", "Flips", bool(view.edits_total)),
        ("cues", "Model vs data", view.cues is not None),
        ("calibration", "Calibration", view.calibration is not None),
        ("image-controls", "Image controls", view.image_controls is not None),
        ("margins", "Margins", "margins.png" in view.figures),
        ("heatmaps", "Heatmaps", bool(view.heat_groups)),
        ("run", "Run", True),
    )
    return [(anchor, title) for anchor, title, shown in sections if shown]


def build_view(data: RunData, figures: Figures) -> ReportView:
    """The report's view model from the run's records and the figures drawn for it."""
    summary = data.summary
    subtitle = []
    if summary.model_path and summary.model_path != summary.model:
        subtitle.append(f"model path {summary.model_path}")
    if summary.counts:
        subtitle.append("prompts: " + _joined(summary.counts))
    flip_views = [_flip_view(data, edit) for edit in data.flips]
    views = _figure_views(figures)
    bound = colour_bound(data.attributions)
    view = ReportView(
        model=summary.model or "?",
        subtitle=" · ".join(subtitle),
        status=summary.status if summary.status not in (None, "complete") else None,
        stages=", ".join(summary.stages_completed) or "none",
        problems=data.problems,
        cards=_cards(data),
        truth=list(summary.ground_truth_triggers.items()),
        notes=summary.notes,
        lexicon=_lexicon_tables(data),
        edits_total=len(data.attacks),
        flips_total=len(flip_views),
        flip_groups=[
            FlipGroup(target, FLIP_TITLES[target], [f for f in flip_views if f.target == target])
            for target in FLIP_TITLES
            if any(f.target == target for f in flip_views)
        ],
        flip_table=flip_views,
        cues=_cues(data),
        calibration=_calibration(data),
        image_controls=_image_controls(data),
        methods=", ".join(sorted({r.method for r in data.attributions if r.method})),
        bound=f"{bound:.2g}",
        heat_groups=_heat_groups(data, figures, bound, views),
        run_rows=_run_rows(data),
        config_json=(
            json.dumps(summary.config, indent=1, ensure_ascii=False) if summary.config else None
        ),
        figures=views,
    )
    view.nav = _nav(view)
    return view
