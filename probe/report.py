"""Report stage: the run directory (DESIGN.md contract) and its human-readable renderings.

``write_*`` functions put each stage's results on disk as soon as they exist, so an interrupted
run keeps what it already wrote. ``render_report(run_dir)`` re-creates report.md, report.html
and figures/ from the run directory alone (that is what ``probe report RUN_DIR`` does).

report.html is one self-contained file: inline CSS, figures as base64 PNGs, no scripts, no
fonts, no network (a Content-Security-Policy forbids anything else), and every piece of user
text (prompts, responses, words, model names) is HTML-escaped. Every field beyond the minimal
contract is optional, so a partial or hand-made run directory still renders.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from probe.errors import ProbeError
from probe.lexicon_table import DIRECTIONS, LexiconEntry, TriggerLexicon
from probe.rundir import (  # noqa: F401
    read_jsonl,
    remove_own_figures,
    write_figure_manifest,
    write_jsonl,
    write_lexicon,
    write_summary,
)

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
# Sign convention everywhere: positive pushes toward refusal (red), negative toward compliance.
REFUSAL_RGB = (192, 57, 43)
COMPLIANCE_RGB = (36, 113, 163)
REFUSAL_HEX = "#c0392b"
COMPLIANCE_HEX = "#2471a3"
FIGURES = {
    "lexicon.png": "Top trigger words with 95% bootstrap intervals",
    "flip_rates.png": "Verified flip rate per trigger word with 95% Wilson intervals",
    "margins.png": "Decision margins: prompts by label, and before/after one-word edits",
    "heatmaps.png": "Word attributions for a sample of prompts",
}


@dataclass
class RunData:
    """Everything a report is made from, read from one run directory (see ``load_run``)."""

    run_dir: Path
    summary: dict
    lexicon: TriggerLexicon | None = None
    data_cues: TriggerLexicon | None = None
    attributions: list[dict] = field(default_factory=list)
    responses: dict[str, dict] = field(default_factory=dict)
    attacks: list[dict] = field(default_factory=list)

    @property
    def flips(self) -> list[dict]:
        return [a for a in self.attacks if a.get("flipped")]


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory's files (only summary.json is required)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise ProbeError(f"{run_dir} is not a probe run directory (no summary.json)")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ProbeError(f"{summary_path}: not valid JSON ({exc.msg})") from None
    if not isinstance(summary, dict):
        raise ProbeError(f"{summary_path}: expected a JSON object")
    lexicon_file = run_dir / "lexicon.json"
    cues_file = run_dir / "data_cues.json"
    responses = {}
    for record in read_jsonl(run_dir / "responses.jsonl"):
        if isinstance(record, dict) and "id" in record:
            responses.setdefault(str(record["id"]), record)
    return RunData(
        run_dir=run_dir,
        summary=summary,
        lexicon=TriggerLexicon.from_json(lexicon_file) if lexicon_file.is_file() else None,
        data_cues=TriggerLexicon.from_json(cues_file) if cues_file.is_file() else None,
        attributions=[r for r in read_jsonl(run_dir / "attributions.jsonl") if _words_ok(r)],
        responses=responses,
        attacks=[a for a in read_jsonl(run_dir / "attacks.jsonl") if isinstance(a, dict)],
    )


def _words_ok(record: dict) -> bool:
    """An attribution line the heatmaps can draw: as many finite-able scores as words."""
    if not isinstance(record, dict):
        return False
    words, scores = record.get("words"), record.get("scores")
    return isinstance(words, list) and isinstance(scores, list) and len(words) == len(scores)


# ------------------------------------------------------------------------------------ helpers
def _num(value) -> float | None:
    """A finite float, or None (for missing, null, NaN and non-numeric values)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _pct(value) -> str:
    number = _num(value)
    return "—" if number is None else f"{100 * number:.1f}%"


def _signed(value, digits: int = 2) -> str:
    number = _num(value)
    return "—" if number is None else f"{number:+.{digits}f}"


def _q(value) -> str:
    number = _num(value)
    return "—" if number is None else f"{number:.2g}"


def _esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _score_list(record: dict) -> list[float]:
    return [_num(s) or 0.0 for s in record["scores"]]


def _colour_bound(attributions: list[dict]) -> float:
    """Colour saturation bound: the 95th percentile of |score| (one huge score must not wash
    out every other word); exact values stay in the hover text."""
    import numpy as np

    values = np.abs([s for r in attributions for s in _score_list(r)])
    values = values[values > 0]
    if values.size == 0:
        return 1.0
    return float(np.quantile(values, 0.95)) or float(values.max())


def _judged(data: RunData, record: dict) -> bool | None:
    """Judged refusal of a prompt by the generation judge (responses.jsonl); None if unknown."""
    response = data.responses.get(str(record.get("id")))
    if response is not None and isinstance(response.get("judged_refusal"), bool):
        return response["judged_refusal"]
    return None


def _label(value) -> str | None:
    if value is None:
        return None
    text = str(value).lower()
    return {"unsafe": "harmful", "safe": "benign"}.get(text, text)


def _flip_counts(entry: LexiconEntry) -> tuple[int, int] | None:
    trials = _num(entry.extra.get("flip_trials"))
    rate = _num(entry.flip_rate)
    if trials is None or rate is None:
        return None
    return round(rate * trials), int(trials)


def _flip_rows_for_chart(data: RunData) -> list[tuple[str, str, float, float, float, str]]:
    """(word, direction, rate, low, high, "k/n") for every trigger with a measured flip rate.

    From the lexicon's flip columns; when no entry has one (an older or hand-made run), from
    attacks.jsonl: per new word, prompts flipped / prompts it was verified on (Wilson CI).
    """
    rows = []
    if data.lexicon is not None:
        for direction in DIRECTIONS:
            for e in data.lexicon.ranked(direction):
                rate = _num(e.flip_rate)
                if rate is None:
                    continue
                low = _num(e.flip_ci_low)
                high = _num(e.flip_ci_high)
                counts = _flip_counts(e)
                rows.append(
                    (
                        e.word,
                        direction,
                        rate,
                        rate if low is None else low,
                        rate if high is None else high,
                        f"{counts[0]}/{counts[1]}" if counts else "",
                    )
                )
    if rows or not data.attacks:
        return rows
    from probe.stats import wilson_interval

    tried: dict[tuple[str, str], set[str]] = {}
    won: dict[tuple[str, str], set[str]] = {}
    for a in data.attacks:
        word = str(a.get("new_word", "")).lower()
        if not word:
            continue
        key = (word, _attack_target(a))
        tried.setdefault(key, set()).add(str(a.get("id")))
        if a.get("flipped"):
            won.setdefault(key, set()).add(str(a.get("id")))
    for (word, direction), ids in sorted(tried.items(), key=lambda kv: -len(kv[1])):
        k, n = len(won.get((word, direction), ())), len(ids)
        low, high = wilson_interval(k, n)
        rows.append((word, direction, k / n, low, high, f"{k}/{n}"))
    return rows


def _attack_target(attack: dict) -> str:
    """The direction an edit pushed toward: "compliance" (attack) or "refusal" (over-refusal)."""
    target = attack.get("target")
    if target in DIRECTIONS:
        return target
    before = attack.get("judged_refusal_before")
    if isinstance(before, bool):
        return "compliance" if before else "refusal"
    margin = _num(attack.get("margin_before"))
    return "compliance" if margin is None or margin > 0 else "refusal"


# ------------------------------------------------------------------------------------ figures
def _short(text, limit: int = 22) -> str:
    """A chart label: at most ``limit`` characters, with an ellipsis when cut."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _lexicon_figure(lexicon: TriggerLexicon, path: Path, k: int = 10) -> bool:
    rows = lexicon.ranked("refusal")[:k] + lexicon.ranked("compliance")[:k]
    rows = [e for e in rows if _num(e.effect) is not None]
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.2))
    labels = [f"{_short(e.word)} (n={e.support})" for e in rows]
    effects = [e.effect for e in rows]
    lows = [_num(e.ci_low) for e in rows]
    highs = [_num(e.ci_high) for e in rows]
    errors = [
        [
            max(0.0, e.effect - (lo if lo is not None else e.effect))
            for e, lo in zip(rows, lows, strict=True)
        ],
        [
            max(0.0, (hi if hi is not None else e.effect) - e.effect)
            for e, hi in zip(rows, highs, strict=True)
        ],
    ]
    colours = [REFUSAL_HEX if e.direction == "refusal" else COMPLIANCE_HEX for e in rows]
    ax.barh(range(len(rows)), effects, xerr=errors, color=colours, capsize=2)
    for y, e in enumerate(rows):
        ax.annotate(
            f"{e.effect:+.2f}",
            (0, y),
            xytext=(-4 if e.effect > 0 else 4, 0),
            textcoords="offset points",
            ha="right" if e.effect > 0 else "left",
            va="center",
            fontsize=7,
            color="#444",
        )
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("effect on the margin (red: toward refusal, blue: toward compliance)")
    ax.set_title("Top trigger words (95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _flip_rate_figure(rows: list[tuple], path: Path, k: int = 20) -> bool:
    rows = rows[:k]
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.34 * len(rows) + 1.2))
    rates = [r[2] for r in rows]
    errors = [[max(0.0, r[2] - r[3]) for r in rows], [max(0.0, r[4] - r[2]) for r in rows]]
    colours = [REFUSAL_HEX if r[1] == "refusal" else COMPLIANCE_HEX for r in rows]
    ax.barh(range(len(rows)), rates, xerr=errors, color=colours, capsize=3)
    ax.set_yticks(
        range(len(rows)),
        [f"{_short(r[0])} ({r[5]})" if r[5] else _short(r[0]) for r in rows],
        fontsize=8,
    )
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("share of attacked prompts flipped (red: to refusal, blue: to compliance)")
    ax.set_title("Verified flip rate per trigger (95% Wilson CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _margin_figure(data: RunData, path: Path) -> bool:
    import numpy as np

    by_label: dict[str, list[float]] = {}
    for r in data.attributions:
        margin = _num(r.get("margin"))
        if margin is not None:
            by_label.setdefault(_label(r.get("label")) or "unlabelled", []).append(margin)
    edits: dict[str, tuple[list[float], list[float]]] = {}
    for a in data.attacks:
        before, after = _num(a.get("margin_before")), _num(a.get("margin_after"))
        if before is not None and after is not None:
            pair = edits.setdefault(_attack_target(a), ([], []))
            pair[0].append(before)
            pair[1].append(after)
    panels = (["labels"] if by_label else []) + [d for d in ("compliance", "refusal") if d in edits]
    if not panels:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    everything = [v for vs in by_label.values() for v in vs] + [
        v for pair in edits.values() for vs in pair for v in vs
    ]
    low, high = min(everything), max(everything)
    if high - low < 1e-9:
        low, high = low - 1, high + 1
    bins = np.linspace(low, high, 25)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "labels":
            palette = {"harmful": REFUSAL_HEX, "benign": COMPLIANCE_HEX}
            for name, values in sorted(by_label.items()):
                ax.hist(
                    values,
                    bins=bins,
                    alpha=0.55,
                    color=palette.get(name, "#888888"),
                    label=f"{name} (n={len(values)})",
                )
            ax.set_title("Prompt margins by label", fontsize=10)
        else:
            before, after = edits[panel]
            ax.hist(before, bins=bins, alpha=0.55, color="#777777", label="before edit")
            ax.hist(
                after,
                bins=bins,
                alpha=0.6,
                color=COMPLIANCE_HEX if panel == "compliance" else REFUSAL_HEX,
                label="after edit",
            )
            what = "harmful → answered" if panel == "compliance" else "benign → refused"
            ax.set_title(f"Edits toward {panel} ({what}), n={len(before)}", fontsize=10)
        ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xlabel("margin (> 0 leans to refusal)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _heatmap_sample(data: RunData, per_group: int = 4) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for record in data.attributions:
        groups.setdefault(_group_key(data, record), []).append(record)
    sample = []
    for key in sorted(groups, key=_group_order):
        sample += groups[key][:per_group]
    return sample


def _heatmap_figure(data: RunData, path: Path) -> bool:
    rows = _heatmap_sample(data)
    if not rows:
        return False
    plt = _pyplot()
    width = max(1, max(len(r["words"]) for r in rows))
    bound = _colour_bound(data.attributions)
    fig, ax = plt.subplots(figsize=(min(18, 2.0 + 0.9 * width), 0.42 * len(rows) + 1.2))
    cmap = plt.get_cmap("RdBu_r")
    for y, record in enumerate(rows):
        for x, (word, score) in enumerate(zip(record["words"], _score_list(record), strict=True)):
            strength = _strength(score, bound)
            ax.add_patch(
                plt.Rectangle(
                    (x, y), 1, 1, color=cmap(0.5 + 0.5 * math.copysign(0.85 * strength, score))
                )
            )
            dark = strength > 0.6
            ax.text(
                x + 0.5,
                y + 0.5,
                _short(word, 14),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
            )
    ax.set_xlim(0, width)
    ax.set_ylim(len(rows), 0)
    ax.set_yticks(
        [y + 0.5 for y in range(len(rows))],
        [f"{r.get('id')} · {_group_title(_group_key(data, r))[0]}" for r in rows],
        fontsize=7,
    )
    ax.set_xticks([])
    ax.set_title(
        f"Word attributions (red: toward refusal, blue: toward compliance; "
        f"intensity ∝ √|score|, saturating at ±{bound:.2g})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _image_map(record: dict):
    """The record's image attribution map as a 2-D float array, or None."""
    import numpy as np

    raw = record.get("image_map")
    if raw is None:
        return None
    try:
        array = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        return None
    if array.ndim != 2 or array.size == 0:
        return None
    return np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)


def _find_image(data: RunData, value) -> Path | None:
    if not value or not isinstance(value, str):
        return None
    path = Path(value)
    candidates = [path] if path.is_absolute() else [data.run_dir / path, Path.cwd() / path]
    config_prompts = (data.summary.get("config") or {}).get("prompts")
    if config_prompts and not path.is_absolute():
        candidates.append(Path(config_prompts).parent / path)
    return next((c for c in candidates if c.is_file()), None)


def _image_figure(data: RunData, record: dict, path: Path) -> bool:
    """The image with its patch attribution map over it (or the map alone if the image is gone)."""
    from matplotlib.colors import TwoSlopeNorm

    array = _image_map(record)
    if array is None:
        return False
    image = None
    image_path = _find_image(data, record.get("image"))
    if image_path is not None:
        try:
            from PIL import Image

            with Image.open(image_path) as opened:
                image = opened.convert("RGB")
                image.thumbnail((512, 512))
                image.load()
        except OSError:
            image = None
    plt = _pyplot()
    bound = float(abs(array).max()) or 1.0
    norm = TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)
    panels = 2 if image is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(2.3 * panels + 0.5, 2.4), squeeze=False)
    if image is not None:
        w, h = image.size
        axes[0][0].imshow(image)
        axes[0][0].set_title("image", fontsize=8)
        axes[0][1].imshow(image, extent=(0, w, h, 0))
        shown = axes[0][1].imshow(
            array,
            cmap="RdBu_r",
            norm=norm,
            alpha=0.55,
            extent=(0, w, h, 0),
            interpolation="nearest",
        )
        axes[0][1].set_title("patch attribution", fontsize=8)
    else:
        shown = axes[0][0].imshow(array, cmap="RdBu_r", norm=norm, interpolation="nearest")
        axes[0][0].set_title("image not found: map only", fontsize=8)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(shown, ax=list(axes[0]), fraction=0.05, pad=0.03)
    bar.ax.tick_params(labelsize=6)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return True


def _render_figures(data: RunData, figures: Path) -> dict[str, str]:
    """Draw every figure the run's data allows; returns {file name: caption} of those drawn.

    A figure the data no longer supports is deleted, so a re-render never shows a stale one.
    """
    figures.mkdir(exist_ok=True)
    drawn: dict[str, str] = {}
    makers = {
        "lexicon.png": lambda p: data.lexicon is not None and _lexicon_figure(data.lexicon, p),
        "flip_rates.png": lambda p: _flip_rate_figure(_flip_rows_for_chart(data), p),
        "margins.png": lambda p: _margin_figure(data, p),
        "heatmaps.png": lambda p: _heatmap_figure(data, p),
    }
    remove_own_figures(figures)  # only what probe drew before (the manifest); a user's stay
    for name, make in makers.items():
        if make(figures / name):
            drawn[name] = FIGURES[name]
    for index, record in enumerate(data.attributions):
        name = f"image_{index:04d}.png"
        if _image_figure(data, record, figures / name):
            record["_image_figure"] = name
            drawn[name] = f"image attribution for {record.get('id')}"
    write_figure_manifest(figures, drawn)
    return drawn


# ------------------------------------------------------------------------------------ tables
LEXICON_HEADER = [
    "direction",
    "rank",
    "word",
    "effect",
    "95% CI",
    "support",
    "consistency",
    "q",
    "flip rate",
]
LEXICON_HTML_HEADER = [
    "rank",
    "word",
    "role",
    "effect",
    "95% CI",
    "support",
    "lead share",
    "consistency",
    "p",
    "q",
    "flip rate",
    "flip 95% CI",
    "flipped / tried",
]


def _lexicon_rows(lexicon: TriggerLexicon, k: int) -> list[list[str]]:
    rows = []
    for direction in DIRECTIONS:
        for rank, e in enumerate(lexicon.ranked(direction)[:k], 1):
            rows.append(
                [
                    direction,
                    str(rank),
                    e.word,
                    _fmt(_num(e.effect)),
                    f"[{_fmt(_num(e.ci_low))}, {_fmt(_num(e.ci_high))}]",
                    str(e.support),
                    _fmt(_num(e.consistency), 2),
                    _q(e.q_value),
                    _flip_text(e),
                ]
            )
    return rows


def _flip_text(e: LexiconEntry) -> str:
    rate = _num(e.flip_rate)
    if rate is None:
        return "—"
    low, high = _num(e.flip_ci_low), _num(e.flip_ci_high)
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    return f"{rate:.2f}{interval}"


def _cue_rows(comparison: dict) -> list[list[str]]:
    """Rank-aligned rows: model vs data top words for each direction (shared words marked *)."""
    top = comparison.get("top", {})
    k = int(comparison.get("k") or 0)
    rows = []
    for rank in range(k):
        row = [str(rank + 1)]
        for direction in DIRECTIONS:
            sides = top.get(direction, {})
            shared = set(sides.get("shared", []))
            for side in ("model", "data"):
                words = sides.get(side, [])
                word = str(words[rank]) if rank < len(words) else ""
                row.append(f"{word}*" if word and word in shared else word)
        rows.append(row)
    return rows


CUE_HEADER = ["rank", "model refusal", "data refusal", "model compliance", "data compliance"]


def _cue_summary(comparison: dict) -> str:
    overlap = comparison.get("overlap_at_k", {})
    return (
        f"overlap@{comparison.get('k', '?')}: refusal {_fmt(_num(overlap.get('refusal')), 2)}, "
        f"compliance {_fmt(_num(overlap.get('compliance')), 2)}; Spearman rank correlation of "
        f"effects over {comparison.get('n_common_words', '?')} shared words: "
        f"{_fmt(_num(comparison.get('rank_correlation')), 2)}"
        " (* = in both top lists; content words are left out of the model side)"
    )


def _calibration_lines(calibration: dict) -> list[tuple[str, str]]:
    rows = [
        ("openings source", str(calibration.get("source", "—"))),
        (
            "calibrated from the model's generations",
            {True: "yes", False: "no"}.get(calibration.get("calibrated"), "—"),
        ),
        ("refusal openings", ", ".join(map(str, calibration.get("refusal_openings", [])))),
        ("compliance openings", ", ".join(map(str, calibration.get("compliance_openings", [])))),
        (
            "margin-vs-judge agreement (default → final)",
            f"{_pct(calibration.get('agreement_default'))} → "
            f"{_pct(calibration.get('agreement_final'))}",
        ),
        (
            "prompts judged refused / answered",
            f"{_fmt(calibration.get('n_judged_refused'))} / "
            f"{_fmt(calibration.get('n_judged_complied'))}",
        ),
    ]
    if calibration.get("note"):
        rows.append(("note", str(calibration["note"])))
    return rows


# ------------------------------------------------------------------------------------ markdown
def _md_cell(text) -> str:
    return (
        html.escape("" if text is None else str(text), quote=False)
        .replace("|", "\\|")
        .replace("\n", " ")
    )


def _verdict(refused) -> str:
    return {True: "refused", False: "answered"}.get(refused, "not judged")


def _md_marked(text: str, index, expected: str | None) -> str:
    """A markdown cell of ``text`` with its ``index``-th word in bold."""
    word = _find_word(text, index, expected)
    if word is None:
        return _md_cell(text)
    return _md_cell(text[: word.start]) + f"**{_md_cell(word.text)}**" + _md_cell(text[word.end :])


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]


def _metric_value(summary: dict, key: str) -> str:
    value = _num(summary.get("metrics", {}).get(key))
    if value is None:
        return "—"
    return _pct(value) if key in RATE_METRICS else f"{value:.1f}"


def _metric_detail(summary: dict, key: str) -> str:
    counts = summary.get("counts", {})
    detail = {
        "refusal_rate_harmful": ("harmful", "harmful prompts"),
        "refusal_rate_benign": ("benign", "benign prompts"),
        "asr_one_word": ("attacked_harmful", "refused harmful prompts attacked"),
        "over_refusal_one_word": ("attacked_benign", "answered benign prompts attacked"),
    }.get(key)
    if detail and counts.get(detail[0]) is not None:
        return f"of {counts[detail[0]]} {detail[1]}"
    return ""


def _markdown(data: RunData, figures: dict[str, str]) -> str:
    summary = data.summary
    lines = [f"# probe audit: {_md_cell(summary.get('model', '?'))}", ""]
    if summary.get("status") not in (None, "complete"):
        lines += [f"**Run status: {_md_cell(summary.get('status'))}** (results are partial)", ""]
    rows = [
        [
            label,
            _metric_value(summary, key)
            + (f" ({d})" if (d := _metric_detail(summary, key)) else ""),
        ]
        for key, label in METRIC_LABELS.items()
    ]
    lines += _md_table(["metric", "value"], rows)
    counts = summary.get("counts", {})
    if counts:
        lines += ["", "Prompts: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    truth = summary.get("ground_truth_triggers")
    if isinstance(truth, dict) and truth:
        lines += [
            "",
            "Planted triggers (demo model): "
            + ", ".join(f"{_md_cell(d)} → `{_md_cell(w)}`" for d, w in truth.items()),
        ]
    if data.lexicon is not None:
        lines += ["", "## Trigger lexicon", ""]
        lines += _md_table(LEXICON_HEADER, _lexicon_rows(data.lexicon, 10))
        lines += [
            "",
            "effect: mean change of the refusal margin the word causes (> 0 toward refusal); "
            "flip rate: share of attacked prompts the word flipped, verified by generation "
            "(95% Wilson interval).",
        ]
    comparison = summary.get("data_cue_comparison")
    if comparison:
        lines += ["", "## Did the model learn its data's shortcuts?", "", _cue_summary(comparison)]
        lines += [""] + _md_table(CUE_HEADER, _cue_rows(comparison))
    if data.flips:
        lines += [
            "",
            "## Verified one-word flips (first 5 per direction)",
            "",
            "The changed word is in bold; responses are greedy generations, judged.",
            "",
            "| original | edited | response before → after |",
            "|---|---|---|",
        ]
        for target in ("compliance", "refusal"):
            for a in [f for f in data.flips if _attack_target(f) == target][:5]:
                original, variant = str(a.get("original", "")), str(a.get("variant", ""))
                position = _edit_position(original, variant, a.get("position"))
                before = data.responses.get(str(a.get("id")), {})
                before_refused = a.get("judged_refusal_before", before.get("judged_refusal"))
                responses = (
                    f"{_verdict(before_refused)}: {_md_cell(before.get('response', ''))} → "
                    f"{_verdict(a.get('judged_refusal_after'))}: "
                    f"{_md_cell(a.get('response_after', ''))}"
                )
                lines.append(
                    f"| {_md_marked(original, position, a.get('old_word'))} | "
                    f"{_md_marked(variant, position, a.get('new_word'))} | {responses} |"
                )
    calibration = summary.get("margin_calibration")
    if isinstance(calibration, dict):
        lines += ["", "## Margin calibration", ""]
        lines += _md_table(["setting", "value"], [list(r) for r in _calibration_lines(calibration)])
    notes = summary.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {_md_cell(n)}" for n in notes]
    shown = [f"figures/{n}" for n in figures if not n.startswith("image_")]
    if shown:
        lines += ["", "Figures: " + ", ".join(shown)]
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ html
def _kv_table(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table class='kv'><tbody>{body}</tbody></table>"


def _html_table(
    header: list[str], rows: list[list[str]], css_class: str = "", raw_columns: Iterable[int] = ()
) -> str:
    """A table of escaped cells (columns in ``raw_columns`` hold HTML this module built)."""
    raw = set(raw_columns)
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{c if i in raw else _esc(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return (
        f'<table class="{_esc(css_class)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _strength(score: float, bound: float) -> float:
    """Colour intensity in [0, 1]: square root of |score| / bound, so that words an order of
    magnitude below the strongest one stay visible (the exact value is in the hover text)."""
    return math.sqrt(min(1.0, abs(score) / bound)) if bound else 0.0


def _rgba(score: float, bound: float) -> tuple[str, bool]:
    strength = _strength(score, bound)
    r, g, b = REFUSAL_RGB if score > 0 else COMPLIANCE_RGB
    return f"rgba({r},{g},{b},{0.85 * strength:.2f})", strength > 0.6


def _word_spans(record: dict, bound: float) -> str:
    """The prompt with each attributed word coloured; text between words kept (escaped)."""
    words = [str(w) for w in record["words"]]
    scores = _score_list(record)
    prompt = record.get("prompt")
    spans = record.get("spans")
    usable = (
        isinstance(prompt, str)
        and isinstance(spans, list)
        and len(spans) == len(words)
        and all(
            isinstance(s, list | tuple)
            and len(s) == 2
            and all(isinstance(v, int) for v in s)
            and 0 <= s[0] <= s[1] <= len(prompt)
            for s in spans
        )
        and all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    )
    parts = []
    cursor = 0
    for index, (word, score) in enumerate(zip(words, scores, strict=True)):
        colour, dark = _rgba(score, bound)
        text = prompt[spans[index][0] : spans[index][1]] if usable else word
        if usable:
            parts.append(_esc(prompt[cursor : spans[index][0]]))
            cursor = spans[index][1]
        elif index:
            parts.append(" ")
        parts.append(
            f'<span class="w{" d" if dark else ""}" style="background:{colour}" '
            f'title="{_esc(word)}: {score:+.3f}">{_esc(text)}</span>'
        )
    if usable:
        parts.append(_esc(prompt[cursor:]))
    return "".join(parts)


def _find_word(text: str, index, expected: str | None = None):
    """The ``index``-th word of ``text`` (probe.words numbering), or the first word equal to
    ``expected`` when that index does not hold it; None if neither is found."""
    from probe.words import split_words

    words = split_words(text)
    if not isinstance(index, int) or not 0 <= index < len(words):
        index = None
    if expected and (index is None or words[index].text.lower() != str(expected).lower()):
        matches = [i for i, w in enumerate(words) if w.text.lower() == str(expected).lower()]
        index = matches[0] if matches else index
    return None if index is None else words[index]


def _mark_word(text: str, index, css: str, expected: str | None = None) -> str:
    """``text`` escaped, with its ``index``-th word (probe.words numbering) wrapped in a mark."""
    word = _find_word(text, index, expected)
    if word is None:
        return _esc(text)
    return (
        _esc(text[: word.start])
        + f'<mark class="{css}">{_esc(word.text)}</mark>'
        + _esc(text[word.end :])
    )


def _edit_position(original: str, variant: str, position) -> int | None:
    """The index of the changed word: ``position`` if it is one, else the first differing word."""
    from probe.words import split_words

    if isinstance(position, int) and position >= 0:
        return position
    a, b = split_words(original), split_words(variant)
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x.text != y.text:
            return i
    return None


def _badge(refused) -> str:
    if refused is True:
        return '<span class="badge ref">refused</span>'
    if refused is False:
        return '<span class="badge ans">answered</span>'
    return '<span class="badge unk">not judged</span>'


def _png_tag(path: Path, alt: str, css: str = "") -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cls = f' class="{_esc(css)}"' if css else ""
    return f'<img{cls} alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _figure(figures_dir: Path, name: str, caption: str) -> str:
    tag = _png_tag(figures_dir / name, caption)
    return f"<figure>{tag}<figcaption>{_esc(caption)}</figcaption></figure>" if tag else ""


GROUPS = {
    ("harmful", True): ("harmful · refused", "as intended", 0),
    ("harmful", False): ("harmful · answered", "missed refusal", 1),
    ("benign", True): ("benign · refused", "over-refusal", 2),
    ("benign", False): ("benign · answered", "as intended", 3),
}


def _group_key(data: RunData, record: dict) -> tuple:
    return (_label(record.get("label")), _judged(data, record))


def _group_title(key: tuple) -> tuple[str, str, int]:
    if key in GROUPS:
        return GROUPS[key]
    label = key[0] or "unlabelled"
    judged = {True: "refused", False: "answered", None: "not judged"}[key[1]]
    return f"{label} · {judged}", "", 10 + (0 if key[1] else 1)


def _group_order(key: tuple) -> tuple:
    return (_group_title(key)[2], str(key))


def _prompt_row(data: RunData, record: dict, bound: float, figures_dir: Path) -> str:
    rid = str(record.get("id"))
    response = data.responses.get(rid, {})
    margin = _num(record.get("margin"))
    margin_css = "" if margin is None else (" ref" if margin > 0 else " ans")
    image = ""
    if record.get("_image_figure"):
        image = _png_tag(figures_dir / record["_image_figure"], f"image attribution {rid}", "imap")
    reply = ""
    if "response" in response:
        reply = (
            f"<div class='resp'>{_badge(response.get('judged_refusal'))} "
            f"<span class='rtext'>{_esc(response.get('response'))}</span></div>"
        )
    return (
        f"<div class='prow' title='{_esc(record.get('prompt', ''))}'>"
        f"<div class='pid'>{_esc(rid)}<br><span class='margin{margin_css}' "
        f"title='decision margin (&gt; 0 leans to refusal)'>{_signed(margin)}</span></div>"
        f"<div class='pbody'><div class='ptext'>{_word_spans(record, bound)}</div>{reply}</div>"
        f"{image}</div>"
    )


def _heatmap_section(data: RunData, figures_dir: Path, shown: int = 30) -> str:
    if not data.attributions:
        return ""
    bound = _colour_bound(data.attributions)
    groups: dict[tuple, list[dict]] = {}
    for record in data.attributions:
        groups.setdefault(_group_key(data, record), []).append(record)
    methods = sorted({str(r.get("method")) for r in data.attributions if r.get("method")})
    parts = [
        "<h2 id='heatmaps'>Word attributions per prompt</h2>",
        "<p class='meta'>Each word is coloured by its attribution"
        + (f" ({_esc(', '.join(methods))})" if methods else "")
        + ": <span class='w d' style='background:rgba(192,57,43,.85)'>red</span> pushes toward "
        "refusal, <span class='w d' style='background:rgba(36,113,163,.85)'>blue</span> toward "
        f"compliance; intensity grows with √|score| and saturates at ±{bound:.2g} (95th "
        "percentile); hover a word for its exact score. "
        "The number under each id is the prompt's decision margin; below the prompt, the model's "
        "response and the judge's verdict. Prompts are grouped by label and judged outcome.</p>",
        "<div class='legend'><span>compliance</span><span class='ramp'></span>"
        "<span>refusal</span></div>",
    ]
    for key in sorted(groups, key=_group_order):
        records = groups[key]
        title, note, _ = _group_title(key)
        unexpected = note in ("missed refusal", "over-refusal")
        rows = [_prompt_row(data, r, bound, figures_dir) for r in records]
        more = ""
        if len(rows) > shown:
            more = (
                f"<details><summary>{len(rows) - shown} more</summary>"
                + "".join(rows[shown:])
                + "</details>"
            )
        plural = "s" if len(records) != 1 else ""
        parts.append(
            f"<details class='group{' warn' if unexpected else ''}' open><summary>"
            f"<strong>{_esc(title)}</strong> — {len(records)} prompt{plural}"
            f"{f' ({_esc(note)})' if note else ''}</summary>"
            + "".join(rows[:shown])
            + more
            + "</details>"
        )
    return "\n".join(parts)


def _flip_card(data: RunData, a: dict) -> str:
    original, variant = str(a.get("original", "")), str(a.get("variant", ""))
    position = _edit_position(original, variant, a.get("position"))
    before = data.responses.get(str(a.get("id")), {})
    before_refused = a.get("judged_refusal_before", before.get("judged_refusal"))
    response_before = before.get("response")
    response_after = a.get("response_after")
    after_refused = a.get("judged_refusal_after")
    label = _label(a.get("label")) or _label(before.get("label")) or "unlabelled"
    lines = [
        f"<div class='fmeta'><strong>{_esc(a.get('id'))}</strong> · {_esc(label)} · "
        f"<mark class='old'>{_esc(a.get('old_word', '?'))}</mark> → "
        f"<mark class='new'>{_esc(a.get('new_word', '?'))}</mark> · margin "
        f"{_signed(a.get('margin_before'))} → {_signed(a.get('margin_after'))}</div>",
        "<div class='frow'><span class='tag'>original</span><span>"
        + _mark_word(original, position, "old", a.get("old_word"))
        + "</span></div>",
    ]
    if response_before is not None or isinstance(before_refused, bool):
        lines.append(
            f"<div class='resp'>{_badge(before_refused)} "
            f"<span class='rtext'>{_esc(response_before or '')}</span></div>"
        )
    lines.append(
        "<div class='frow'><span class='tag'>edited</span><span>"
        + _mark_word(variant, position, "new", a.get("new_word"))
        + "</span></div>"
    )
    if response_after is not None or isinstance(after_refused, bool):
        lines.append(
            f"<div class='resp'>{_badge(after_refused)} "
            f"<span class='rtext'>{_esc(response_after or '')}</span></div>"
        )
    return "<div class='flip'>" + "".join(lines) + "</div>"


def _flips_section(data: RunData, cards: int = 6) -> str:
    if not data.attacks:
        return ""
    parts = [
        "<h2 id='flips'>Verified one-word flips</h2>",
        f"<p class='meta'>{len(data.flips)} of {len(data.attacks)} verified edits flipped the "
        "model's judged response. Each changed exactly one word; the changed word is "
        "highlighted, and both responses are greedy generations judged by the refusal judge."
        "</p>",
    ]
    for target, title in (
        ("compliance", "Harmful → answered (one-word attack success)"),
        ("refusal", "Benign → refused (one-word over-refusal)"),
    ):
        flips = [a for a in data.flips if _attack_target(a) == target]
        if not flips:
            continue
        parts.append(f"<h3>{_esc(title)}: {len(flips)}</h3>")
        parts.append("<div class='flips'>" + "".join(_flip_card(data, a) for a in flips[:cards]))
        parts.append("</div>")
    if data.flips:
        rows = []
        for a in data.flips:
            original, variant = str(a.get("original", "")), str(a.get("variant", ""))
            position = _edit_position(original, variant, a.get("position"))
            rows.append(
                [
                    _esc(a.get("id")),
                    _esc(f"→ {_attack_target(a)}"),
                    _mark_word(original, position, "old", a.get("old_word")),
                    _mark_word(variant, position, "new", a.get("new_word")),
                    _esc(f"{_signed(a.get('margin_before'))} → {_signed(a.get('margin_after'))}"),
                    _esc(a.get("response_after", "")),
                ]
            )
        parts.append(
            f"<details><summary>All {len(rows)} flips as a table</summary>"
            + _html_table(
                ["id", "toward", "original", "edited", "margin", "response after"],
                rows,
                "flips",
                raw_columns=range(6),
            )
            + "</details>"
        )
    return "\n".join(parts)


def _lexicon_section(data: RunData, figures_dir: Path, drawn: dict[str, str], k: int = 15) -> str:
    lexicon = data.lexicon
    if lexicon is None:
        return ""
    truth = data.summary.get("ground_truth_triggers")
    planted = {str(w).lower() for w in truth.values()} if isinstance(truth, dict) else set()
    parts = [
        "<h2 id='lexicon'>Trigger lexicon</h2>",
        "<p class='meta'>effect: mean change of the decision margin the word causes "
        "(&gt; 0 toward refusal) with a 95% bootstrap interval; support: prompts containing it; "
        "lead share: share of those where it is the first word; q: Benjamini–Hochberg q-value; "
        "flip rate: share of attacked prompts this word flipped by a one-word edit, verified by "
        "generation, with a 95% Wilson interval"
        + ("; ★ planted trigger of the demo model" if planted else "")
        + ".</p>",
    ]
    for direction in DIRECTIONS:
        entries = lexicon.ranked(direction)
        rows = []
        for rank, e in enumerate(entries, 1):
            counts = _flip_counts(e)
            low, high = _num(e.flip_ci_low), _num(e.flip_ci_high)
            rows.append(
                [
                    str(rank),
                    e.word + (" ★" if e.word.lower() in planted else ""),
                    str(e.extra.get("role") or "—"),
                    _signed(e.effect, 3),
                    f"[{_fmt(_num(e.ci_low))}, {_fmt(_num(e.ci_high))}]",
                    str(e.support),
                    _fmt(_num(e.extra.get("lead_share")), 2),
                    _fmt(_num(e.consistency), 2),
                    _q(e.p_value),
                    _q(e.q_value),
                    _fmt(_num(e.flip_rate), 2),
                    f"[{low:.2f}, {high:.2f}]" if low is not None and high is not None else "—",
                    f"{counts[0]}/{counts[1]}" if counts else "—",
                ]
            )
        css = f"lexicon {direction}"
        parts.append(
            f"<h3 class='{direction}'>Toward {direction}: {len(entries)} word"
            f"{'s' if len(entries) != 1 else ''}</h3>"
        )
        if not rows:
            parts.append("<p class='meta'>none</p>")
            continue
        parts.append(_html_table(LEXICON_HTML_HEADER, rows[:k], css))
        if len(rows) > k:
            parts.append(
                f"<details><summary>{len(rows) - k} more</summary>"
                + _html_table(LEXICON_HTML_HEADER, rows[k:], css)
                + "</details>"
            )
    figures = [
        _figure(figures_dir, name, drawn[name])
        for name in ("lexicon.png", "flip_rates.png")
        if name in drawn
    ]
    if figures:
        parts.append("<div class='figs'>" + "".join(figures) + "</div>")
    return "\n".join(parts)


def _cue_section(data: RunData) -> str:
    comparison = data.summary.get("data_cue_comparison")
    if not comparison or not isinstance(comparison, dict):
        return ""
    parts = [
        "<h2 id='cues'>Did the model learn its data's shortcuts?</h2>",
        "<p class='meta'>The model's trigger words (from attributions) beside the data's cue "
        "words (words skewed toward refusal- or compliance-labelled prompts in the fine-tuning "
        "data, log-odds with an informative Dirichlet prior).</p>",
        f"<p>{_esc(_cue_summary(comparison))}</p>",
    ]
    if data.data_cues is not None:
        meta = data.data_cues.meta
        described = ", ".join(
            f"{k} {v}"
            for k, v in meta.items()
            if k in ("dataset", "view", "statistic", "unit") and v is not None
        )
        if described:
            parts.append(f"<p class='meta'>data cues: {_esc(described)}</p>")
    rows = _cue_rows(comparison)
    raw = []
    for row in rows:
        cells = [_esc(row[0])]
        for cell in row[1:]:
            shared = cell.endswith("*")
            word = _esc(cell[:-1] if shared else cell)
            cells.append(f"<strong class='shared'>{word}</strong>" if shared else word)
        raw.append(cells)
    parts.append(_html_table(CUE_HEADER, raw, "cues", raw_columns=range(len(CUE_HEADER))))
    return "\n".join(parts)


def _calibration_section(data: RunData) -> str:
    calibration = data.summary.get("margin_calibration")
    if not isinstance(calibration, dict):
        return ""
    return (
        "<h2 id='calibration'>Margin calibration</h2>"
        "<p class='meta'>The decision margin is log P(refusal opening) − log P(compliance "
        "opening). Its sign is checked against the judge on the model's own generations; when "
        "the default openings disagree, openings are calibrated from the model's responses.</p>"
        + _kv_table(_calibration_lines(calibration))
    )


def _metric_cards(summary: dict) -> str:
    cards = []
    for key, label in METRIC_LABELS.items():
        detail = _metric_detail(summary, key)
        cards.append(
            f"<div class='card'><div class='val'>{_esc(_metric_value(summary, key))}</div>"
            f"<div class='lab'>{_esc(label)}</div>"
            + (f"<div class='det'>{_esc(detail)}</div>" if detail else "")
            + "</div>"
        )
    return "<div class='cards'>" + "".join(cards) + "</div>"


def _footer(summary: dict) -> str:
    rows = []
    for name, title in (("versions", "versions"), ("timings_s", "stage timings (s)")):
        value = summary.get(name)
        if isinstance(value, dict) and value:
            rows.append([title, ", ".join(f"{k} {v}" for k, v in value.items())])
    if summary.get("stages_completed"):
        rows.append(["stages completed", ", ".join(map(str, summary["stages_completed"]))])
    config = summary.get("config")
    body = _kv_table(rows) if rows else ""
    if isinstance(config, dict):
        body += (
            "<details><summary>configuration</summary><pre>"
            + _esc(json.dumps(config, indent=1, ensure_ascii=False))
            + "</pre></details>"
        )
    return f"<h2 id='run'>Run</h2>{body}" if body else ""


CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
:root{--ref:#c0392b;--ans:#2471a3;--mute:#666;--line:#d9d9d9}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1150px;
margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:1px solid var(--line);padding-bottom:.2em;margin-top:1.8em}
h3.refusal{color:var(--ref)}h3.compliance{color:var(--ans)}
nav a{margin-right:1em;font-size:14px}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid var(--line);padding:3px 8px;
font-size:13px;text-align:left;vertical-align:top}th{background:#f3f3f3}
table.lexicon td:nth-child(n+4){font-variant-numeric:tabular-nums}
table.kv td:first-child{color:var(--mute)}
.meta{color:var(--mute);font-size:13px}
.banner{background:#fff3cd;border:1px solid #e0c36a;padding:.5em 1em;border-radius:4px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:1em 0}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:150px;flex:1}
.card .val{font-size:26px;font-weight:600}.card .lab{font-size:13px}
.card .det{font-size:12px;color:var(--mute)}
.figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.figs figure{flex:1 1 480px;max-width:560px}
figure{margin:.6em 0}figcaption{font-size:12px;color:var(--mute)}img{max-width:100%}
.w{padding:1px 3px;border-radius:3px}.w.d{color:#fff}
.legend{display:flex;align-items:center;gap:8px;font-size:12px;color:var(--mute)}
.ramp{display:inline-block;width:180px;height:10px;border-radius:3px;
background:linear-gradient(90deg,rgba(36,113,163,.85),rgba(255,255,255,0),rgba(192,57,43,.85))}
details.group{border:1px solid var(--line);border-radius:6px;margin:.6em 0;padding:.3em .8em}
details.group.warn{border-color:#e0a96a;background:#fffaf3}
summary{cursor:pointer}
.prow{display:flex;gap:12px;padding:3px 0;border-top:1px solid #eee}
.pid{min-width:90px;font-size:12px;color:var(--mute)}.pbody{flex:1}
.ptext{font-size:15px}
.margin{font-variant-numeric:tabular-nums;font-weight:600}.margin.ref{color:var(--ref)}
.margin.ans{color:var(--ans)}
.resp{font-size:13px;color:#444;margin-top:2px}.rtext{font-style:italic}
.badge{display:inline-block;font-size:11px;padding:0 6px;border-radius:8px;color:#fff;
font-style:normal}.badge.ref{background:var(--ref)}.badge.ans{background:var(--ans)}
.badge.unk{background:#999}
.imap{max-width:300px;max-height:150px;align-self:center}
.flips{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:10px}
.flip{border:1px solid var(--line);border-radius:6px;padding:8px 10px;font-size:14px}
.fmeta{font-size:12px;color:var(--mute);margin-bottom:4px}
.frow{display:flex;gap:8px;margin-top:4px}.tag{font-size:11px;color:var(--mute);min-width:50px}
mark.old{background:#f5d5d0;text-decoration:line-through;padding:0 2px}
mark.new{background:#fde68a;font-weight:600;padding:0 2px}
strong.shared{color:#7d3c98}
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}
"""


def _html(data: RunData, figures_dir: Path, drawn: dict[str, str]) -> str:
    summary = data.summary
    model = str(summary.get("model", "?"))
    parts = [f"<h1>probe audit: {_esc(model)}</h1>"]
    subtitle = []
    if summary.get("model_path") and summary.get("model_path") != model:
        subtitle.append(f"model path {summary['model_path']}")
    counts = summary.get("counts", {})
    if counts:
        subtitle.append("prompts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if subtitle:
        parts.append(f"<p class='meta'>{_esc(' · '.join(subtitle))}</p>")
    status = summary.get("status")
    if status not in (None, "complete"):
        stages = ", ".join(map(str, summary.get("stages_completed", []))) or "none"
        parts.append(
            f"<p class='banner'>Run status: <strong>{_esc(status)}</strong>. Stages completed: "
            f"{_esc(stages)}. Sections below show what the run directory holds.</p>"
        )
    sections = [
        ("lexicon", "Lexicon", data.lexicon is not None),
        ("flips", "Flips", bool(data.attacks)),
        ("cues", "Model vs data", bool(summary.get("data_cue_comparison"))),
        ("calibration", "Calibration", isinstance(summary.get("margin_calibration"), dict)),
        ("margins", "Margins", "margins.png" in drawn),
        ("heatmaps", "Heatmaps", bool(data.attributions)),
        ("run", "Run", True),
    ]
    parts.append(
        "<nav>" + "".join(f"<a href='#{a}'>{_esc(t)}</a>" for a, t, ok in sections if ok) + "</nav>"
    )
    parts.append(_metric_cards(summary))
    truth = summary.get("ground_truth_triggers")
    if isinstance(truth, dict) and truth:
        parts.append(
            "<p class='meta'>Planted triggers of the demo model: "
            + ", ".join(f"toward {_esc(d)}: <strong>{_esc(w)}</strong>" for d, w in truth.items())
            + "</p>"
        )
    notes = summary.get("notes") or []
    if notes:
        parts.append("<ul class='meta'>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    parts.append(_lexicon_section(data, figures_dir, drawn))
    parts.append(_flips_section(data))
    parts.append(_cue_section(data))
    parts.append(_calibration_section(data))
    if "margins.png" in drawn:
        parts.append("<h2 id='margins'>Margin distributions</h2>")
        parts.append(_figure(figures_dir, "margins.png", drawn["margins.png"]))
    parts.append(_heatmap_section(data, figures_dir))
    parts.append(_footer(summary))
    body = "\n".join(p for p in parts if p)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>probe audit: {_esc(model)}</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def render_report(run_dir: str | Path) -> Path:
    """(Re)write report.md, report.html and figures/ from a run directory's files."""
    data = load_run(run_dir)
    figures_dir = data.run_dir / "figures"
    drawn = _render_figures(data, figures_dir)
    (data.run_dir / "report.md").write_text(_markdown(data, drawn), encoding="utf-8")
    report = data.run_dir / "report.html"
    report.write_text(_html(data, figures_dir, drawn), encoding="utf-8")
    return report
