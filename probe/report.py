"""Report stage: the run directory (DESIGN.md contract) and its human-readable renderings.

``write_*`` functions put each stage's results on disk as soon as they exist, so an interrupted
run keeps what it already wrote. ``render_report(run_dir)`` re-creates report.md, report.html
and figures/ from the run directory alone (that is what ``probe report RUN_DIR`` does).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable
from pathlib import Path

from probe.errors import ProbeError
from probe.lexicon_table import TriggerLexicon

METRIC_LABELS = {
    "refusal_rate_harmful": "Refusal rate, harmful prompts",
    "refusal_rate_benign": "Refusal rate, benign prompts",
    "asr_one_word": "One-word attack success (harmful → answered)",
    "over_refusal_one_word": "One-word over-refusal (benign → refused)",
    "queries_per_success": "Model queries per verified flip",
}


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ProbeError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
    return records


def write_summary(run_dir: Path, summary: dict) -> None:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


def write_lexicon(run_dir: Path, lexicon: TriggerLexicon) -> None:
    lexicon.to_json(run_dir / "lexicon.json")
    lexicon.to_csv(run_dir / "lexicon.csv")


# ------------------------------------------------------------------------------------ figures
def _lexicon_figure(lexicon: TriggerLexicon, path: Path, k: int = 10) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = lexicon.ranked("refusal")[:k] + lexicon.ranked("compliance")[:k]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(6, 0.32 * len(rows) + 1))
    labels = [f"{e.word} (n={e.support})" for e in rows]
    effects = [e.effect for e in rows]
    errors = [[e.effect - e.ci_low for e in rows], [e.ci_high - e.effect for e in rows]]
    colours = ["#c0392b" if e.direction == "refusal" else "#2471a3" for e in rows]
    ax.barh(range(len(rows)), effects, xerr=errors, color=colours, capsize=2)
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("effect on the refusal margin (red: toward refusal, blue: toward compliance)")
    ax.set_title("Top trigger words (95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _heatmap_figure(attributions: list[dict], path: Path, n: int = 12) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    rows = attributions[:n]
    if not rows:
        return False
    width = max(len(r["words"]) for r in rows)
    bound = max((abs(s) for r in rows for s in r["scores"]), default=1.0) or 1.0
    fig, ax = plt.subplots(figsize=(min(18, 1.0 + 0.9 * width), 0.45 * len(rows) + 1))
    cmap = plt.get_cmap("RdBu_r")
    norm = TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)
    for y, record in enumerate(rows):
        for x, (word, score) in enumerate(zip(record["words"], record["scores"], strict=True)):
            ax.add_patch(plt.Rectangle((x, y), 1, 1, color=cmap(norm(score))))
            ax.text(x + 0.5, y + 0.5, word, ha="center", va="center", fontsize=7)
    ax.set_xlim(0, width)
    ax.set_ylim(len(rows), 0)
    ax.set_yticks([y + 0.5 for y in range(len(rows))], [str(r["id"]) for r in rows], fontsize=7)
    ax.set_xticks([])
    ax.set_title("Word attributions (red: toward refusal, blue: toward compliance)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------ render
def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _lexicon_rows(lexicon: TriggerLexicon, k: int) -> list[list[str]]:
    rows = []
    for direction in ("refusal", "compliance"):
        for rank, e in enumerate(lexicon.ranked(direction)[:k], 1):
            rows.append(
                [
                    direction,
                    str(rank),
                    e.word,
                    _fmt(e.effect),
                    f"[{_fmt(e.ci_low)}, {_fmt(e.ci_high)}]",
                    str(e.support),
                    _fmt(e.consistency, 2),
                    f"{e.q_value:.2g}",
                    _fmt(e.flip_rate, 2),
                ]
            )
    return rows


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


def _cue_rows(comparison: dict) -> list[list[str]]:
    """Rank-aligned rows: model vs data top words for each direction (shared words marked *)."""
    top = comparison["top"]
    rows = []
    for rank in range(comparison["k"]):
        row = [str(rank + 1)]
        for direction in ("refusal", "compliance"):
            shared = set(top[direction]["shared"])
            for side in ("model", "data"):
                words = top[direction][side]
                word = words[rank] if rank < len(words) else ""
                row.append(f"{word}*" if word in shared else word)
        rows.append(row)
    return rows


CUE_HEADER = ["rank", "model refusal", "data refusal", "model compliance", "data compliance"]


def _cue_summary(comparison: dict) -> str:
    overlap = comparison["overlap_at_k"]
    return (
        f"overlap@{comparison['k']}: refusal {_fmt(overlap['refusal'], 2)}, compliance "
        f"{_fmt(overlap['compliance'], 2)}; Spearman rank correlation of effects over "
        f"{comparison['n_common_words']} shared words: {_fmt(comparison['rank_correlation'], 2)}"
        " (* = in both top lists; content words are left out of the model side)"
    )


def _markdown(summary: dict, lexicon: TriggerLexicon | None, attacks: list[dict]) -> str:
    lines = [f"# probe audit: {summary.get('model', '?')}", ""]
    metrics = summary.get("metrics", {})
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {label} | {_fmt(metrics.get(key))} |" for key, label in METRIC_LABELS.items()]
    counts = summary.get("counts", {})
    if counts:
        lines += ["", "Prompts: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    if lexicon is not None:
        lines += [
            "",
            "## Trigger lexicon",
            "",
            "| " + " | ".join(LEXICON_HEADER) + " |",
            "|" + "---|" * len(LEXICON_HEADER),
        ]
        lines += ["| " + " | ".join(r) + " |" for r in _lexicon_rows(lexicon, 10)]
    comparison = summary.get("data_cue_comparison")
    if comparison:
        lines += [
            "",
            "## Did the model learn its data's shortcuts?",
            "",
            _cue_summary(comparison),
            "",
            "| " + " | ".join(CUE_HEADER) + " |",
            "|" + "---|" * len(CUE_HEADER),
        ]
        lines += ["| " + " | ".join(r) + " |" for r in _cue_rows(comparison)]
    flips = [a for a in attacks if a.get("flipped")]
    if flips:
        lines += [
            "",
            "## Verified one-word flips (first 10)",
            "",
            "| original | edited | response |",
            "|---|---|---|",
        ]
        for a in flips[:10]:
            lines.append(
                f"| {_md_cell(a['original'])} | {_md_cell(a['variant'])} | "
                f"{_md_cell(a.get('response_after', ''))} |"
            )
    lines += ["", "Figures: figures/lexicon.png, figures/heatmaps.png", ""]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def _html_table(header: list[str], rows: list[list[str]], css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _word_spans(record: dict, bound: float) -> str:
    parts = []
    for word, score in zip(record["words"], record["scores"], strict=True):
        strength = min(1.0, abs(score) / bound) if bound else 0.0
        colour = "192,57,43" if score > 0 else "36,113,163"
        parts.append(
            f'<span class="w" style="background:rgba({colour},{strength:.2f})" '
            f'title="{score:+.3f}">{html.escape(word)}</span>'
        )
    return " ".join(parts)


def _png_tag(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
font-size:14px}th{background:#f3f3f3}.w{padding:1px 2px;border-radius:3px}
.prompt{margin:4px 0}.meta{color:#666;font-size:12px}img{max-width:100%}"""


def _html(
    summary: dict,
    lexicon: TriggerLexicon | None,
    attributions: list[dict],
    attacks: list[dict],
    figures: Path,
) -> str:
    metrics = summary.get("metrics", {})
    parts = [f"<h1>probe audit: {html.escape(str(summary.get('model', '?')))}</h1>"]
    parts.append(
        _html_table(
            ["metric", "value"],
            [[label, _fmt(metrics.get(key))] for key, label in METRIC_LABELS.items()],
            "metrics",
        )
    )
    if lexicon is not None:
        parts.append("<h2>Trigger lexicon</h2>")
        parts.append(_html_table(LEXICON_HEADER, _lexicon_rows(lexicon, 15), "lexicon"))
        parts.append(_png_tag(figures / "lexicon.png", "lexicon chart"))
    comparison = summary.get("data_cue_comparison")
    if comparison:
        parts.append("<h2>Did the model learn its data's shortcuts?</h2>")
        parts.append(f"<p>{html.escape(_cue_summary(comparison))}</p>")
        parts.append(_html_table(CUE_HEADER, _cue_rows(comparison), "cues"))
    flips = [a for a in attacks if a.get("flipped")]
    if flips:
        parts.append("<h2>Verified one-word flips</h2>")
        parts.append(
            _html_table(
                ["id", "original", "edited", "new word", "margin before → after", "response"],
                [
                    [
                        str(a["id"]),
                        a["original"],
                        a["variant"],
                        a["new_word"],
                        f"{a['margin_before']:+.2f} → {a['margin_after']:+.2f}",
                        a.get("response_after", ""),
                    ]
                    for a in flips[:25]
                ],
                "flips",
            )
        )
    if attributions:
        parts.append(
            "<h2>Word attributions</h2><p class='meta'>red pushes toward refusal, "
            "blue toward compliance; hover a word for its score</p>"
        )
        bound = max((abs(s) for r in attributions for s in r["scores"]), default=1.0)
        for record in attributions:
            parts.append(
                f"<div class='prompt'><span class='meta'>{html.escape(str(record['id']))} "
                f"({html.escape(str(record.get('label')))}, margin {record['margin']:+.2f})"
                f"</span><br>{_word_spans(record, bound)}</div>"
            )
    body = "\n".join(p for p in parts if p)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>probe audit</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def render_report(run_dir: str | Path) -> Path:
    """(Re)write report.md, report.html and figures/ from a run directory's files."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise ProbeError(f"{run_dir} is not a probe run directory (no summary.json)")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ProbeError(f"{summary_path}: not valid JSON ({exc.msg})") from None
    lexicon_file = run_dir / "lexicon.json"
    lexicon = TriggerLexicon.from_json(lexicon_file) if lexicon_file.is_file() else None
    attributions = read_jsonl(run_dir / "attributions.jsonl")
    attacks = read_jsonl(run_dir / "attacks.jsonl")
    figures = run_dir / "figures"
    figures.mkdir(exist_ok=True)
    if lexicon is not None:
        _lexicon_figure(lexicon, figures / "lexicon.png")
    _heatmap_figure(attributions, figures / "heatmaps.png")
    (run_dir / "report.md").write_text(_markdown(summary, lexicon, attacks), encoding="utf-8")
    report = run_dir / "report.html"
    report.write_text(_html(summary, lexicon, attributions, attacks, figures), encoding="utf-8")
    return report
