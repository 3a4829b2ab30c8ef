"""The report's figures (matplotlib, PNG) and the manifest of the files probe wrote.

``draw_figures`` draws every figure the run's data allows into ``figures/`` and lists them in
``figures/.probe-figures.json``. A re-render first deletes the files that manifest lists — and
only those — so a stale figure never lingers and a user's own file in ``figures/`` survives.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.errors import ProbeError
from probe.lexicon.table import TriggerLexicon
from probe.report.records import AttributionView, number
from probe.report.view import (
    COMPLIANCE_HEX,
    REFUSAL_HEX,
    Figures,
    FlipRateRow,
    colour_bound,
    flip_rate_rows,
    group_key,
    group_title,
    heatmap_sample,
    short,
    strength,
)
from probe.rundir import remove_own_figures, write_figure_manifest

if TYPE_CHECKING:
    from PIL.Image import Image

    from probe.report.reader import RunData

# Values beyond this are drawn at it: matplotlib overflows on numbers near the float limit, and
# no margin, effect or attribution of that size is meaningful anyway.
PLOT_LIMIT = 1e12
CAPTIONS = {
    "lexicon.png": "Top trigger words with 95% bootstrap intervals",
    "flip_rates.png": "Verified flip rate per trigger word with 95% Wilson intervals",
    "margins.png": "Decision margins: prompts by label, and before/after one-word edits",
    "heatmaps.png": "Word attributions for a sample of prompts",
}


def plotted(value: float) -> float:
    """``value`` clipped to the plottable range [-PLOT_LIMIT, PLOT_LIMIT]."""
    return max(-PLOT_LIMIT, min(PLOT_LIMIT, value))


def _share(value: float) -> float:
    return min(1.0, max(0.0, value))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _lexicon_figure(lexicon: TriggerLexicon, path: Path, k: int = 10) -> bool:
    rows = []
    for entry in lexicon.ranked("refusal")[:k] + lexicon.ranked("compliance")[:k]:
        effect = number(entry.effect)
        if effect is not None:
            bounds = (number(entry.ci_low), number(entry.ci_high))
            low, high = (None if v is None else plotted(v) for v in bounds)
            effect = plotted(effect)
            rows.append((str(entry.word), entry.direction, effect, low, high, entry.support))
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.2))
    effects = [r[2] for r in rows]
    errors = [
        [max(0.0, e - (lo if lo is not None else e)) for _, _, e, lo, _, _ in rows],
        [max(0.0, (hi if hi is not None else e) - e) for _, _, e, _, hi, _ in rows],
    ]
    colours = [REFUSAL_HEX if r[1] == "refusal" else COMPLIANCE_HEX for r in rows]
    ax.barh(range(len(rows)), effects, xerr=errors, color=colours, capsize=2)
    for y, effect in enumerate(effects):
        ax.annotate(
            f"{effect:+.2f}",
            (0, y),
            xytext=(-4 if effect > 0 else 4, 0),
            textcoords="offset points",
            ha="right" if effect > 0 else "left",
            va="center",
            fontsize=7,
            color="#444",
        )
    ax.set_yticks(range(len(rows)), [f"{short(r[0])} (n={r[5]})" for r in rows])
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("effect on the margin (red: toward refusal, blue: toward compliance)")
    ax.set_title("Top trigger words (95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _flip_rate_figure(rows: list[FlipRateRow], path: Path, k: int = 20) -> bool:
    rows = [
        replace(r, rate=_share(r.rate), low=_share(r.low), high=_share(r.high)) for r in rows[:k]
    ]
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.34 * len(rows) + 1.2))
    errors = [[max(0.0, r.rate - r.low) for r in rows], [max(0.0, r.high - r.rate) for r in rows]]
    colours = [REFUSAL_HEX if r.direction == "refusal" else COMPLIANCE_HEX for r in rows]
    ax.barh(range(len(rows)), [r.rate for r in rows], xerr=errors, color=colours, capsize=3)
    labels = [f"{short(r.word)} ({r.counts})" if r.counts else short(r.word) for r in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
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
    for record in data.attributions:
        if record.margin is not None:
            by_label.setdefault(record.label or "unlabelled", []).append(plotted(record.margin))
    edits: dict[str, tuple[list[float], list[float]]] = {}
    for edit in data.attacks:
        if edit.margin_before is not None and edit.margin_after is not None:
            pair = edits.setdefault(edit.target, ([], []))
            pair[0].append(plotted(edit.margin_before))
            pair[1].append(plotted(edit.margin_after))
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
                colour = palette.get(name, "#888888")
                label = f"{short(name)} (n={len(values)})"
                ax.hist(values, bins=bins, alpha=0.55, color=colour, label=label)
            ax.set_title("Prompt margins by label", fontsize=10)
        else:
            before, after = edits[panel]
            colour = COMPLIANCE_HEX if panel == "compliance" else REFUSAL_HEX
            ax.hist(before, bins=bins, alpha=0.55, color="#777777", label="before edit")
            ax.hist(after, bins=bins, alpha=0.6, color=colour, label="after edit")
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


def _heatmap_figure(data: RunData, path: Path) -> bool:
    rows = heatmap_sample(data)
    if not rows:
        return False
    plt = _pyplot()
    width = max(1, max(len(r.words) for r in rows))
    bound = colour_bound(data.attributions)
    fig, ax = plt.subplots(figsize=(min(18, 2.0 + 0.9 * width), 0.42 * len(rows) + 1.2))
    cmap = plt.get_cmap("RdBu_r")
    for y, record in enumerate(rows):
        for x, (word, score) in enumerate(zip(record.words, record.scores, strict=True)):
            level = strength(score, bound)
            colour = cmap(0.5 + 0.5 * math.copysign(0.85 * level, score))
            ax.add_patch(plt.Rectangle((x, y), 1, 1, color=colour))
            ax.text(
                x + 0.5,
                y + 0.5,
                short(word, 14),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if level > 0.6 else "black",
            )
    ax.set_xlim(0, width)
    ax.set_ylim(len(rows), 0)
    labels = [f"{short(r.id)} · {group_title(group_key(data, r))[0]}" for r in rows]
    ax.set_yticks([y + 0.5 for y in range(len(rows))], labels, fontsize=7)
    ax.set_xticks([])
    ax.set_title(
        f"Word attributions (red: toward refusal, blue: toward compliance; "
        f"intensity ∝ √|score|, saturating at ±{bound:.2g})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _find_image(data: RunData, value: str | None) -> Path | None:
    """The record's image file: relative to the run directory, the working directory or the
    prompt file's folder (as written in the config); None if none of them has it."""
    if not value:
        return None
    path = Path(value)
    candidates = [path] if path.is_absolute() else [data.run_dir / path, Path.cwd() / path]
    prompts = data.summary.config.get("prompts")
    if isinstance(prompts, str) and prompts and not path.is_absolute():
        candidates.append(Path(prompts).parent / path)
    return next((c for c in candidates if c.is_file()), None)


def to_rgb(image: Image) -> Image:
    """An 8-bit RGB copy of ``image``. High-bit-depth greyscale (16-bit PNGs open as ``I;16`` or
    ``I``, floats as ``F``) is scaled to 0-255, where a plain ``convert`` would clip every
    value above 255 to white."""
    import numpy as np
    from PIL import Image as PILImage

    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            low, high = float(values.min()), float(values.max())
            scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        else:
            scaled = values / 65535.0
        grey = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
        return PILImage.fromarray(grey, "L").convert("RGB")
    return image.convert("RGB")


def _open_image(path: Path) -> Image | None:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as opened:
            image = to_rgb(opened)
    except (OSError, ValueError, PILImage.DecompressionBombError):
        return None
    image.thumbnail((512, 512))
    return image


def _image_figure(data: RunData, record: AttributionView, path: Path) -> bool:
    """The image with its patch attribution map over it (or the map alone if the image is gone)."""
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    if record.image_map is None:
        return False
    array = np.clip(np.asarray(record.image_map, dtype=float), -PLOT_LIMIT, PLOT_LIMIT)
    image_path = _find_image(data, record.image)
    image = _open_image(image_path) if image_path is not None else None
    plt = _pyplot()
    bound = float(abs(array).max()) or 1.0
    norm = TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)
    panels = 2 if image is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(2.3 * panels + 0.5, 2.4), squeeze=False)
    style = {"cmap": "RdBu_r", "norm": norm, "interpolation": "nearest"}
    if image is not None:
        w, h = image.size
        axes[0][0].imshow(image)
        axes[0][0].set_title("image", fontsize=8)
        axes[0][1].imshow(image, extent=(0, w, h, 0))
        shown = axes[0][1].imshow(array, alpha=0.55, extent=(0, w, h, 0), **style)
        axes[0][1].set_title("patch attribution", fontsize=8)
    else:
        shown = axes[0][0].imshow(array, **style)
        axes[0][0].set_title("image not found: map only", fontsize=8)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(shown, ax=list(axes[0]), fraction=0.05, pad=0.03)
    bar.ax.tick_params(labelsize=6)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return True


def draw_figures(data: RunData, figures_dir: Path) -> Figures:
    """Delete the figures probe wrote last time, draw every figure the data allows, and write
    the manifest of the new ones."""
    try:
        figures_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise ProbeError(f"cannot create {figures_dir}: {exc.strerror or exc}") from None
    remove_own_figures(figures_dir)
    figures = Figures(figures_dir)
    makers = {
        "lexicon.png": lambda p: data.lexicon is not None and _lexicon_figure(data.lexicon, p),
        "flip_rates.png": lambda p: _flip_rate_figure(flip_rate_rows(data), p),
        "margins.png": lambda p: _margin_figure(data, p),
        "heatmaps.png": lambda p: _heatmap_figure(data, p),
    }
    for name, make in makers.items():
        if make(figures_dir / name):
            figures.captions[name] = CAPTIONS[name]
    for index, record in enumerate(data.attributions):
        name = f"image_{index:04d}.png"
        if _image_figure(data, record, figures_dir / name):
            figures.image_of[index] = name
            figures.captions[name] = f"image attribution for {record.id}"
    write_figure_manifest(figures_dir, figures.captions)
    return figures
