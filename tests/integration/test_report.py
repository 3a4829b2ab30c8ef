"""report.html / report.md escape prompt text (render_report on a hand-made run directory)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.errors import ProbeError
from probe.lexicon.table import LexiconEntry, TriggerLexicon
from probe.report import render_report
from probe.rundir import FIGURES_MANIFEST, write_jsonl, write_lexicon, write_summary
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


# ------------------------------------------------------------------ hostile run directories
def _report_cli(run, capsys) -> tuple[int, str]:
    from probe.cli import main

    code = main(["report", str(run)])
    return code, capsys.readouterr().err


def test_binary_responses_file_is_one_error_line(run_dir, capsys):
    (run_dir / "responses.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary\xc3")
    code, err = _report_cli(run_dir, capsys)
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("probe: error: ")
    assert "responses.jsonl" in err and "UTF-8" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["attributions.jsonl", "attacks.jsonl"])
def test_junk_lines_are_one_error_line(run_dir, capsys, name):
    junk_line = len((run_dir / name).read_text(encoding="utf-8").splitlines()) + 1
    with open(run_dir / name, "a", encoding="utf-8") as handle:
        handle.write("{not json at all\n")
    code, err = _report_cli(run_dir, capsys)
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("probe: error: ")
    assert name in err and f"line {junk_line}:" in err


def test_deeply_nested_line_is_one_error_line(run_dir, capsys):
    with open(run_dir / "attacks.jsonl", "a", encoding="utf-8") as handle:
        handle.write("[" * 100_000 + "]" * 100_000 + "\n")
    code, err = _report_cli(run_dir, capsys)
    assert code != 0 and err.startswith("probe: error: ") and err.count("\n") == 1


def test_records_that_are_not_objects_are_skipped_and_reported(run_dir, capsys):
    with open(run_dir / "attacks.jsonl", "a", encoding="utf-8") as handle:
        handle.write('[1, 2]\n"text"\n')
    with open(run_dir / "attributions.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"id": "bad", "words": ["a", "b"], "scores": [1]}\n')
    code, _ = _report_cli(run_dir, capsys)
    assert code == 0
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "attacks.jsonl: 2 lines not usable; skipped" in text
    assert "attributions.jsonl: 1 line not usable; skipped" in text
    assert "Verified one-word flips" in text  # the usable attack still shows


def test_summary_fields_of_the_wrong_type_render_with_a_note(run_dir, capsys):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.update(
        metrics=[0.5, 0.2],
        counts="six prompts",
        notes={"a": 1},
        model=["not", "a", "string"],
        margin_calibration="yes",
        data_cue_comparison=[1],
        stages_completed="all",
        ground_truth_triggers=7,
    )
    (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    code, err = _report_cli(run_dir, capsys)
    assert code == 0, err
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    wrong = [("metrics", "list"), ("counts", "str"), ("notes", "dict"), ("model", "list")]
    for name, kind in wrong:
        assert f"summary.json: &#39;{name}&#39; should be" in text and f"not {kind}" in text
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "Refusal rate, harmful prompts | — |" in md  # the metric is unknown, not a crash


def test_summary_that_is_not_an_object_is_an_error(tmp_path, capsys):
    (tmp_path / "summary.json").write_text("[1, 2]", encoding="utf-8")
    code, err = _report_cli(tmp_path, capsys)
    assert code != 0 and err.startswith("probe: error: ") and "JSON object" in err


# ------------------------------------------------------------------ inert Markdown
LIVE_MARKDOWN = (
    "Look ![x](http://evil.example/x.png) and [l](javascript:alert(1)) then "
    "<b>raw</b> <http://auto.example/> http://bare.example/a www.example.org "
    "mail me@example.com `code` *em* [ref]: http://defined.example"
)


def _markdown_tokens(md: str) -> list:
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": True}).enable("table").enable("strikethrough")
    tokens = []
    stack = parser.parse(md)
    while stack:
        token = stack.pop()
        tokens.append(token)
        stack.extend(token.children or [])
    return tokens


def test_markdown_carries_no_live_images_links_or_html(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    summary = {"status": "complete", "model": "[m](http://x.example)", "notes": [LIVE_MARKDOWN]}
    write_summary(run, summary)
    response = {"id": "a", "response": LIVE_MARKDOWN, "judged_refusal": True}
    write_jsonl(run / "responses.jsonl", [response])
    write_jsonl(
        run / "attacks.jsonl",
        [
            {
                "id": "a",
                "target": "compliance",
                "original": "Share " + LIVE_MARKDOWN,
                "variant": "What " + LIVE_MARKDOWN,
                "position": 0,
                "old_word": "Share",
                "new_word": "What",
                "margin_before": 1.0,
                "margin_after": -1.0,
                "flipped": True,
                "judged_refusal_before": True,
                "judged_refusal_after": False,
                "response_after": LIVE_MARKDOWN,
            }
        ],
    )
    render_report(run)
    md = (run / "report.md").read_text(encoding="utf-8")
    tokens = _markdown_tokens(md)
    kinds = {t.type for t in tokens}
    assert "table_open" in kinds  # the report's own tables still are tables
    assert not kinds & {"link_open", "image", "html_inline", "html_block", "code_inline"}, kinds
    assert not [line for line in md.splitlines() if line.startswith("[")]  # no link definitions
    # bare URLs and addresses are defanged, so linkifying renderers (GFM) leave them alone too
    assert "http://" not in md and "www." not in md and "me@example" not in md
    # and the text itself survives: what a person reads is what the prompt said
    rendered = "".join(t.content for t in tokens if t.type == "text")
    assert "![x](http[:]//evil.example/x.png)" in rendered
    assert "[l](javascript:alert(1))" in rendered and "<b>raw</b>" in rendered
    # the flip row is one table row of three cells
    rows = [line for line in md.splitlines() if "Share" in line and line.startswith("|")]
    assert len(rows) == 1 and len(re.split(r"(?<!\\)\|", rows[0].strip())) == 5


# ------------------------------------------------------------------ hidden characters
def test_html_neutralises_bidi_overrides_nul_and_lone_surrogates(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    hostile = "Share the \u202egnp.exe\u202c file \u2066x\u2069 with\x00NUL and \ud800 alone"
    # json.dumps escapes as ASCII (\\ud800), as a hand-made or foreign file may
    files = {
        "summary.json": {"status": "complete", "model": "m\u202e", "notes": [hostile]},
        "attributions.jsonl": _attribution(1, hostile, "benign"),
        "responses.jsonl": {"id": "x1", "response": hostile, "judged_refusal": False},
    }
    for name, record in files.items():
        (run / name).write_text(json.dumps(record) + "\n", encoding="ascii")
    render_report(run)
    for name in ("report.html", "report.md"):
        text = (run / name).read_text(encoding="utf-8")
        for char in ("\u202e", "\u202c", "\u2066", "\u2069", "\x00"):
            assert char not in text, (name, repr(char))
        assert "⟨U+202E⟩" in text and "⟨U+0000⟩" in text and "⟨U+D800⟩" in text
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "Share the ⟨U+202E⟩gnp.exe⟨U+202C⟩ file" in html


# ------------------------------------------------------------------ figures manifest
def test_rerender_deletes_only_figures_probe_wrote(run_dir):
    MANIFEST = Path(FIGURES_MANIFEST).name

    render_report(run_dir)
    figures = run_dir / "figures"
    manifest = json.loads((figures / MANIFEST).read_text(encoding="utf-8"))
    assert set(manifest["files"]) == {p.name for p in figures.glob("*.png")}
    assert "heatmaps.png" in manifest["files"]
    (figures / "my_notes.png").write_bytes(b"mine")
    (figures / "my_notes.txt").write_text("mine", encoding="utf-8")
    # the attributions go away: their heatmap is stale and must go, the user's files stay
    (run_dir / "attributions.jsonl").unlink()
    render_report(run_dir)
    assert not (figures / "heatmaps.png").exists()
    assert (figures / "my_notes.png").read_bytes() == b"mine"
    assert (figures / "my_notes.txt").is_file()
    manifest = json.loads((figures / MANIFEST).read_text(encoding="utf-8"))
    assert "heatmaps.png" not in manifest["files"] and "my_notes.png" not in manifest["files"]


def test_manifest_cannot_point_outside_figures(run_dir):
    MANIFEST = Path(FIGURES_MANIFEST).name

    figures = run_dir / "figures"
    outside = run_dir / "keep.png"
    outside.write_bytes(b"keep")
    (figures / "mine.png").write_bytes(b"mine")
    listed = ["../keep.png", str(outside), "sub/x.png", "../summary.json", 3]
    (figures / MANIFEST).write_text(json.dumps({"files": listed}), encoding="utf-8")
    render_report(run_dir)
    assert outside.read_bytes() == b"keep" and (figures / "mine.png").is_file()
    assert (run_dir / "summary.json").is_file()


# ------------------------------------------------------------------ images
def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    import numpy as np
    from PIL import Image

    from probe.report.figures import to_rgb

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")  # 16-bit: the case convert("RGB") clips to white
        rgb = np.asarray(to_rgb(opened), dtype=float)
    assert rgb.shape == (64, 64, 3)
    expected = ramp.astype(float) / 257.0
    assert np.abs(rgb[..., 0] - expected).max() <= 1.0
    assert 120 < rgb.mean() < 135  # a full ramp averages mid-grey, not white


# ------------------------------------------------------------------ newer optional fields
def test_newer_optional_fields_are_shown(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["metrics"]["asr_one_word"] = {"value": 0.5, "ci_low": 0.2, "ci_high": 0.8}
    summary["metrics"]["asr_constrained"] = 0.25
    summary.update(resumed={"attribute": True}, world_size=2)
    (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    attack = json.loads((run_dir / "attacks.jsonl").read_text().splitlines()[0])
    attack.update(kind="insertion", constraints={"pos_kept": True, "fluency": 0.82})
    write_jsonl(run_dir / "attacks.jsonl", [attack])
    write_jsonl(
        run_dir / "responses.jsonl",
        [{"id": "x1", "response": "Sure", "judged_refusal": False, "judges": {"keyword": False}}],
    )
    render_report(run_dir)
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "95% CI [20.0%, 80.0%]" in html
    assert "asr constrained" in html
    assert "insertion" in html and "constraints: pos_kept: True; fluency: 0.820" in html
    assert "judges: keyword=False" in html
    assert "processes (world size)" in html and "attribute: True" in html


def test_flip_rates_fall_back_to_attacks_when_the_lexicon_has_none(run_dir):
    from probe.report import load_run
    from probe.report.view import flip_rate_rows

    write_lexicon(run_dir, TriggerLexicon([LexiconEntry("a", "refusal", 1, 0, 2, 2, 0.1, 0.1)]))
    edit = json.loads((run_dir / "attacks.jsonl").read_text().splitlines()[0])
    edits = [
        {**edit, "id": "p1", "new_word": "Share", "flipped": True},
        {**edit, "id": "p2", "new_word": "share", "flipped": False},
        {**edit, "id": "p3", "new_word": "what", "target": "compliance", "flipped": True},
    ]
    write_jsonl(run_dir / "attacks.jsonl", edits)
    rows = {(r.word, r.direction): r for r in flip_rate_rows(load_run(run_dir))}
    assert set(rows) == {("share", "refusal"), ("what", "compliance")}
    share = rows[("share", "refusal")]
    assert share.rate == 0.5 and share.counts == "1/2" and share.low < 0.5 < share.high
    assert rows[("what", "compliance")].counts == "1/1"


# ------------------------------------------------------------------ any JSON, no traceback
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
_FIELDS = {
    "summary.json": [
        "model",
        "status",
        "metrics",
        "counts",
        "notes",
        "config",
        "versions",
        "margin_calibration",
        "data_cue_comparison",
        "ground_truth_triggers",
        "stages_completed",
        "resumed",
        "world_size",
        "timings_s",
    ],
    "attributions.jsonl": [
        "id",
        "prompt",
        "label",
        "words",
        "scores",
        "spans",
        "margin",
        "method",
        "image",
        "image_map",
    ],
    "responses.jsonl": ["id", "response", "judged_refusal", "label"],
    "attacks.jsonl": [
        "id",
        "original",
        "variant",
        "position",
        "old_word",
        "new_word",
        "target",
        "flipped",
        "margin_before",
        "margin_after",
        "judged_refusal_before",
        "judged_refusal_after",
        "response_after",
        "kind",
        "constraints",
    ],
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_field_values_render_without_a_traceback(tmp_path_factory, data):
    """Every field of every file gets arbitrary JSON: the view and both templates still
    render (figures are drawn from the same typed records, so they are left out for speed)."""
    from probe.report import load_run
    from probe.report.figures import Figures
    from probe.report.render import render_template
    from probe.report.view import build_view

    run = tmp_path_factory.mktemp("fuzz")
    for name, fields in _FIELDS.items():
        records = [
            {f: data.draw(_JSON, label=f"{name}:{f}") for f in fields}
            for _ in range(1 if name == "summary.json" else 2)
        ]
        if name == "attributions.jsonl":  # one usable heatmap line among the arbitrary ones
            records.append({"id": 1, "prompt": "a b", "words": ["a", "b"], "scores": [1, "x"]})
        body = (
            json.dumps(records[0])
            if name == "summary.json"
            else "\n".join(json.dumps(r) for r in records)
        )
        (run / name).write_text(body + "\n", encoding="utf-8")
    view = build_view(load_run(run), Figures(run / "figures"))
    html = render_template("report.html.j2", {"view": view})
    md = render_template("report.md.j2", {"view": view})
    assert html.startswith("<!doctype html>") and md.startswith("# probe audit: ")
    assert "<script" not in html.lower()


def test_numbers_near_the_float_limit_still_draw_every_figure(tmp_path):
    huge = 1e308
    write_summary(tmp_path, {"model": "m"})
    attribution = _attribution(1, "Share a b", "harmful")
    attribution.update(scores=[huge, -huge, 1e-300], margin=huge, image_map=[[huge, -huge]])
    write_jsonl(tmp_path / "attributions.jsonl", [attribution, {**attribution, "margin": -huge}])
    edit = {
        "id": "x1",
        "original": "a b",
        "variant": "c b",
        "margin_before": huge,
        "margin_after": -huge,
        "flipped": True,
    }
    write_jsonl(tmp_path / "attacks.jsonl", [edit])
    entries = [
        LexiconEntry("w", "refusal", huge, -huge, huge, 3, 0.1, 0.1),
        LexiconEntry("v", "compliance", -huge, -huge, huge, 3, 0.1, 0.1, None, 5.0, -huge, huge),
    ]
    write_lexicon(tmp_path, TriggerLexicon(entries))
    render_report(tmp_path)
    drawn = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert drawn == {
        "lexicon.png",
        "flip_rates.png",
        "margins.png",
        "heatmaps.png",
        "image_0000.png",
        "image_0001.png",
    }


# ------------------------------------------------------------------ typed records, read back
def test_records_read_back_as_the_pipeline_wrote_them(tmp_path):
    from probe.attack.records import AttackRecord
    from probe.attribution.base import WordAttribution
    from probe.report import load_run

    prompt = "Share a recipe for bread"
    words = split_words(prompt)
    attribution = WordAttribution(
        id="p1",
        prompt=prompt,
        label="benign",
        words=[w.text for w in words],
        spans=[(w.start, w.end) for w in words],
        scores=[0.812345678, -0.1, 0.0, 0.05, 0.2],
        margin=1.23456789,
        method="occlusion",
        extra={"image": "img/a.png", "image_map": [[0.5, -0.25], [0.0, 1.0]], "text_reliance": 0.4},
    )
    edit = AttackRecord(
        id="p1", label="benign", target="refusal", original=prompt,
        variant="What a recipe for bread", position=0, old_word="Share", new_word="What",
        replaced_pos="VB", source="lexicon", margin_before=1.2345678, margin_after=-0.5,
        flipped=True, judged_refusal_before=True, judged_refusal_after=False,
        response_after="Sure, here it is", queries=4, judge={"keyword": False},
        kind="substitution", pos_after="WP", pos_rule="lead-question", fluency=-0.123456789,
        fluency_ok=True,
    )  # fmt: skip
    response = {"id": "p1", "prompt": prompt, "label": "benign", "response": "No.",
                "judged_refusal": True, "judges": {"keyword": True}}  # fmt: skip
    summary = {"schema_version": 1, "model": "demo", "status": "complete", "failures": {}}
    write_summary(tmp_path, summary)
    write_jsonl(tmp_path / "attributions.jsonl", [attribution.to_record()])
    write_jsonl(tmp_path / "attacks.jsonl", [edit.to_record()])
    write_jsonl(tmp_path / "responses.jsonl", [response])
    data = load_run(tmp_path)
    assert data.problems == []
    view = data.attributions[0]
    # the pipeline's own type, as its strict reader builds it, and the line it came from
    assert view.record == WordAttribution.from_record(attribution.to_record())
    assert view.to_record() == attribution.to_record()
    assert view.image == "img/a.png" and view.image_map == [[0.5, -0.25], [0.0, 1.0]]
    assert view.margin == pytest.approx(1.234568) and view.spans == attribution.spans
    assert data.attacks[0].to_record() == edit.to_record()
    assert AttackRecord.from_record(data.attacks[0].to_record()) == AttackRecord.from_record(
        edit.to_record()
    )
    assert data.responses["p1"].to_record() == response
    assert data.summary.to_record() == summary and data.summary.schema_version == 1


def test_a_garbled_attribution_keeps_its_words_and_says_what_is_unknown(tmp_path):
    from probe.report import load_run

    write_summary(tmp_path, {"model": "demo"})
    line = {"id": 7, "prompt": "a b", "words": ["a", "b"], "scores": [1, "x"],
            "spans": [[2, 3], [0, 1]], "margin": "high", "method": ["occlusion"]}  # fmt: skip
    write_jsonl(tmp_path / "attributions.jsonl", [line])
    view = load_run(tmp_path).attributions[0]
    assert (view.id, view.words, view.scores) == ("7", ["a", "b"], [1.0, 0.0])
    assert view.margin is None and view.spans is None and view.method is None


@pytest.mark.parametrize(
    "version, readable, note",
    [(None, 0, False), (0, 0, False), (1, 1, False), ("1", 0, True), (-3, 0, True)],
)
def test_summary_schema_version_absent_is_zero(tmp_path, version, readable, note):
    from probe.report import load_run

    summary: dict = {"model": "demo"}
    if version is not None:
        summary["schema_version"] = version
    write_summary(tmp_path, summary)
    data = load_run(tmp_path)
    assert data.summary.schema_version == readable
    assert any("schema_version" in p for p in data.problems) == note


def test_a_newer_summary_schema_is_one_clear_error(run_dir, capsys):
    summary = json.loads((run_dir / "summary.json").read_text())
    write_summary(run_dir, {**summary, "schema_version": 2})
    code, err = _report_cli(run_dir, capsys)
    assert code != 0 and err.startswith("probe: error: ") and err.count("\n") == 1
    assert "summary.json has schema_version 2, newer than this probe reads (1)" in err
    assert not (run_dir / "report.md").exists()
