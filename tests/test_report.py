"""report.html / report.md escape prompt text (render_report on a hand-made run directory)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from probe.errors import ProbeError
from probe.lexicon_table import LexiconEntry, TriggerLexicon
from probe.report import render_report
from probe.rundir import write_jsonl, write_lexicon, write_summary
from probe.words import split_words

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
HOSTILE = f"Share {SCRIPT} and {IMG} | with pipes | please"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _attribution(i: int, prompt: str, label: str) -> dict:
    words = split_words(prompt)
    return {
        "id": f"x{i}",
        "prompt": prompt,
        "label": label,
        "words": [w.text for w in words],
        "spans": [[w.start, w.end] for w in words],
        "scores": [0.5 if w.text == "Share" else -0.1 for w in words],
        "margin": 1.0,
        "method": "occlusion",
    }


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    write_summary(
        run,
        {
            "status": "complete",
            "model": "<b>evil-model</b>",
            "metrics": {
                "refusal_rate_harmful": 1.0,
                "refusal_rate_benign": 0.0,
                "asr_one_word": 0.5,
                "over_refusal_one_word": 1.0,
                "queries_per_success": 3.0,
            },
            "counts": {"prompts": 2},
        },
    )
    entries = [
        LexiconEntry("share", "refusal", 1.0, 0.5, 1.5, 4, 0.01, 0.02, 1.0, 1.0),
        LexiconEntry("<b>what</b>", "compliance", -1.0, -1.5, -0.5, 4, 0.01, 0.02, 1.0),
    ]
    write_lexicon(run, TriggerLexicon(entries))
    write_jsonl(
        run / "attributions.jsonl",
        [_attribution(1, HOSTILE, "benign"), _attribution(2, "What is " + IMG, "harmful")],
    )
    write_jsonl(
        run / "attacks.jsonl",
        [
            {
                "id": "x1",
                "label": "benign",
                "target": "refusal",
                "original": HOSTILE,
                "variant": HOSTILE.replace("please", "share"),
                "position": 20,
                "old_word": "please",
                "new_word": "share",
                "margin_before": -1.0,
                "margin_after": 2.0,
                "flipped": True,
                "judged_refusal_before": False,
                "judged_refusal_after": True,
                "response_after": f"I'm sorry {SCRIPT} | no",
                "queries": 3,
            }
        ],
    )
    return run


def test_html_escapes_prompt_text_and_has_no_scripts(run_dir):
    report = render_report(run_dir)
    assert report == run_dir / "report.html"
    text = report.read_text(encoding="utf-8")
    assert "<script" not in text.lower()  # no script at all: not the prompt's, not our own
    assert "<img src=x" not in text
    assert "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "&lt;b&gt;evil-model&lt;/b&gt;" in text
    parser = _Tags()
    parser.feed(text)
    names = {tag for tag, _ in parser.tags}
    assert "script" not in names and "iframe" not in names and "link" not in names
    for tag, attrs in parser.tags:
        assert not any(a.lower().startswith("on") for a in attrs), (tag, attrs)
        if tag == "img":  # self-contained: figures are inline PNG
            assert attrs["src"].startswith("data:image/png;base64,")
    assert any(tag == "img" for tag, _ in parser.tags)


def test_markdown_escapes_pipes_and_html(run_dir):
    render_report(run_dir)
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "<script>" not in md and "<img src=x" not in md
    assert "\\|" in md
    flip_rows = [line for line in md.splitlines() if "alert(1)" in line]
    assert flip_rows
    for line in flip_rows:
        cells = re.split(r"(?<!\\)\|", line.strip())
        # "| a | b | c |" -> ['', a, b, c, '']: exactly three cells, the pipes stay inside them
        assert len(cells) == 5, line
    # every table row of the report has a consistent number of unescaped pipes per table
    for block in re.split(r"\n\s*\n", md):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            widths = {len(re.split(r"(?<!\\)\|", r.strip())) for r in rows}
            assert len(widths) == 1, block


def test_render_creates_figures_and_is_repeatable(run_dir):
    render_report(run_dir)
    first = (run_dir / "report.md").read_text(encoding="utf-8")
    for name in ("lexicon.png", "heatmaps.png"):
        data = (run_dir / "figures" / name).read_bytes()
        assert data.startswith(b"\x89PNG")
    render_report(run_dir)
    assert (run_dir / "report.md").read_text(encoding="utf-8") == first


def test_render_needs_summary(tmp_path):
    with pytest.raises(ProbeError, match="summary.json"):
        render_report(tmp_path)
    (tmp_path / "summary.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(ProbeError):
        render_report(tmp_path)


def test_render_partial_run_directory(tmp_path):
    """An interrupted run (summary only, no lexicon or attacks yet) still renders."""
    write_summary(tmp_path, {"status": "interrupted", "model": "demo"})
    report = render_report(tmp_path)
    assert report.is_file()
    assert "probe audit" in report.read_text(encoding="utf-8")
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "interrupted"
