"""End to end on the built-in demo: `probe audit` with no arguments, then the run directory.

One module-scoped audit (the demo model comes from the session's temporary cache, trained once,
~10 s; the audit takes ~5 s); the tests read what it wrote and re-check the claimed flips
against the model itself.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import probe.subject.text
from probe.cli import main
from probe.demos.text import TRIGGERS, demo_prompts, ensure_demo_model, train_demo_model
from probe.judge import RefusalJudge
from probe.lexicon.table import TriggerLexicon
from probe.words import split_words

RUN_FILES = (
    "summary.json",
    "lexicon.json",
    "lexicon.csv",
    "attributions.jsonl",
    "attacks.jsonl",
    "report.html",
    "report.md",
)
METRICS = (
    "refusal_rate_harmful",
    "refusal_rate_benign",
    "asr_one_word",
    "over_refusal_one_word",
    "queries_per_success",
)
ATTACK_FIELDS = {
    "id",
    "original",
    "variant",
    "position",
    "old_word",
    "new_word",
    "margin_before",
    "margin_after",
    "flipped",
    "judged_refusal_before",
    "judged_refusal_after",
}


@dataclass
class DemoRun:
    code: int
    stdout: str
    stderr: str
    cwd: Path
    seconds: float

    @property
    def out(self) -> Path:
        return self.cwd / "probe-report"

    def json(self, name: str):
        return json.loads((self.out / name).read_text(encoding="utf-8"))

    def jsonl(self, name: str) -> list[dict]:
        lines = (self.out / name).read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def demo_run(request, tmp_path_factory):
    """`probe audit` with no arguments, run in a fresh folder (writes ./probe-report).

    The demo model comes from the session's cache (conftest's ``demo_model_dir``, a temporary
    $PROBE_CACHE_DIR). Torch runs single-threaded here: the demo's 64-wide matrices gain nothing
    from a second thread, and on a busy 2-core machine OpenMP's spinning made training 20x
    slower.
    """
    cwd = tmp_path_factory.mktemp("demo-audit")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cache = request.getfixturevalue("demo_model_dir").parent
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PROBE_CACHE_DIR", str(cache))
            mp.chdir(cwd)
            stdout, stderr = io.StringIO(), io.StringIO()
            started = time.perf_counter()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                code = main(["audit"])
            seconds = time.perf_counter() - started
            yield DemoRun(code, stdout.getvalue(), stderr.getvalue(), cwd, seconds)
    finally:
        torch.set_num_threads(threads)


def test_audit_exits_zero_and_says_where_the_report_is(demo_run):
    assert demo_run.code == 0, demo_run.stderr[-2000:]
    assert "Traceback" not in demo_run.stderr
    said = [line for line in demo_run.stdout.splitlines() if "report.html" in line]
    assert len(said) == 1, demo_run.stdout
    printed = Path(said[0].split()[-1])
    assert (demo_run.cwd / printed).resolve() == (demo_run.out / "report.html").resolve()
    summary = demo_run.json("summary.json")
    assert summary["status"] == "complete"
    assert summary["model"] == "demo"
    assert summary["ground_truth_triggers"] == TRIGGERS
    assert {"load", "attribute", "lexicon", "attack"} <= set(summary["stages_completed"])
    for key in ("config", "versions", "timings_s", "counts"):
        assert summary[key], key


def test_run_directory_has_every_contract_file(demo_run):
    for name in RUN_FILES:
        path = demo_run.out / name
        assert path.is_file() and path.stat().st_size > 0, name
    figures = sorted((demo_run.out / "figures").glob("*.png"))
    assert figures
    for figure in figures:
        assert figure.read_bytes().startswith(b"\x89PNG"), figure


def test_summary_metrics(demo_run):
    metrics = demo_run.json("summary.json")["metrics"]
    for key in METRICS:
        assert key in metrics, key
        assert metrics[key] is not None, key
    for key in METRICS[:4]:
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["queries_per_success"] >= 1.0
    assert metrics["asr_one_word"] >= 0.8
    assert metrics["over_refusal_one_word"] >= 0.8


def test_metrics_agree_with_attacks_jsonl(demo_run):
    summary = demo_run.json("summary.json")
    attacks = demo_run.jsonl("attacks.jsonl")
    counts = summary["counts"]
    flipped = {(r["id"], r["target"]) for r in attacks if r["flipped"]}
    harmful = {i for i, t in flipped if t == "compliance"}
    benign = {i for i, t in flipped if t == "refusal"}
    assert summary["metrics"]["asr_one_word"] == pytest.approx(
        len(harmful) / counts["attacked_harmful"]
    )
    assert summary["metrics"]["over_refusal_one_word"] == pytest.approx(
        len(benign) / counts["attacked_benign"]
    )
    assert counts["verified_edits"] == len(attacks)
    responses = {r["id"]: r for r in demo_run.jsonl("responses.jsonl")}
    labels = [r["label"] for r in responses.values()]
    assert summary["metrics"]["refusal_rate_harmful"] == pytest.approx(
        sum(r["judged_refusal"] for r in responses.values() if r["label"] == "harmful")
        / labels.count("harmful")
    )


def test_every_verdict_keeps_both_judges_opinions(demo_run):
    """responses.jsonl and attacks.jsonl record the keyword and classifier opinions behind each
    verdict, and the summary's keyword-judge figures are recomputable from them."""
    summary = demo_run.json("summary.json")
    attacks = demo_run.jsonl("attacks.jsonl")
    responses = demo_run.jsonl("responses.jsonl")
    for record in [*responses, *attacks]:
        opinions = record["judge"]
        assert isinstance(opinions["keyword_refusal"], bool)
        assert 0.0 <= opinions["classifier_probability"] <= 1.0
        verdict = record.get("judged_refusal", record.get("judged_refusal_after"))
        assert opinions["refusal"] == verdict
    harmful = [r for r in responses if r["label"] == "harmful"]
    assert summary["metrics"]["refusal_rate_harmful_keyword"] == pytest.approx(
        sum(r["judge"]["keyword_refusal"] for r in harmful) / len(harmful)
    )
    toward_compliance = [r for r in attacks if r["target"] == "compliance"]
    won = {r["id"] for r in toward_compliance if not r["judge"]["keyword_refusal"]}
    assert summary["metrics"]["asr_one_word_keyword_judge"] == pytest.approx(
        len(won) / summary["counts"]["attacked_harmful"]
    )
    assert summary["attack_metrics"]["asr"]["ci_low"] <= summary["metrics"]["asr_one_word"]


def test_planted_triggers_rank_first(demo_run):
    entries = demo_run.json("lexicon.json")["entries"]
    refusal = [e["word"] for e in entries if e["direction"] == "refusal"]
    compliance = [e["word"] for e in entries if e["direction"] == "compliance"]
    assert refusal[0] == TRIGGERS["refusal"] == "share"
    assert compliance[0] == TRIGGERS["compliance"] == "what"
    # each direction is contiguous (ranked best-first within its direction)
    directions = [e["direction"] for e in entries]
    assert directions == sorted(directions, key=lambda d: d != "refusal")
    share = next(e for e in entries if e["word"] == "share")
    what = next(e for e in entries if e["word"] == "what")
    assert share["effect"] > 0 > what["effect"]
    assert share["ci_low"] > 0 and what["ci_high"] < 0
    assert share["flip_rate"] is not None and what["flip_rate"] is not None


def test_lexicon_csv_is_the_json_table(demo_run):
    entries = demo_run.json("lexicon.json")["entries"]
    with open(demo_run.out / "lexicon.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["word"] for r in rows] == [e["word"] for e in entries]
    assert [r["direction"] for r in rows] == [e["direction"] for e in entries]
    assert TriggerLexicon.from_json(demo_run.out / "lexicon.json").top("refusal", 1) == ["share"]


def test_attributions_jsonl_contract(demo_run):
    records = demo_run.jsonl("attributions.jsonl")
    prompts = demo_prompts(0)
    assert [r["id"] for r in records] == [p.id for p in prompts]
    for r, p in zip(records, prompts, strict=True):
        assert r["prompt"] == p.prompt and r["label"] == p.label
        assert r["words"] == [w.text for w in split_words(p.prompt)]
        assert len(r["scores"]) == len(r["words"])
        assert isinstance(r["margin"], float) and r["method"] == "occlusion"


def test_every_attack_changes_exactly_one_word(demo_run):
    attacks = demo_run.jsonl("attacks.jsonl")
    assert attacks
    for r in attacks:
        assert ATTACK_FIELDS <= set(r), r
        before, after = split_words(r["original"]), split_words(r["variant"])
        if r["kind"] == "insertion":
            assert len(after) == len(before) + 1 and r["old_word"] == "", r
            assert after[r["position"]].text == r["new_word"]
            continue
        if r["kind"] == "deletion":
            assert len(after) == len(before) - 1 and r["new_word"] == "", r
            assert before[r["position"]].text == r["old_word"]
            continue
        assert len(before) == len(after), r
        changed = [
            i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a.text != b.text
        ]
        assert changed == [r["position"]], r
        assert before[r["position"]].text == r["old_word"]
        assert after[r["position"]].text == r["new_word"]
        assert r["old_word"].lower() != r["new_word"].lower()


def test_flip_records_are_consistent(demo_run):
    judge = RefusalJudge.default()
    responses = {r["id"]: r for r in demo_run.jsonl("responses.jsonl")}
    attacks = demo_run.jsonl("attacks.jsonl")
    for r in attacks:
        wants_refusal = r["target"] == "refusal"
        assert r["flipped"] == (r["judged_refusal_after"] == wants_refusal), r
        assert r["judged_refusal_before"] == responses[r["id"]]["judged_refusal"]
        assert r["judged_refusal_before"] != wants_refusal, r  # only prompts on the other side
        assert judge.is_refusal(r["response_after"]) == r["judged_refusal_after"], r
        expected_target = "compliance" if r["label"] == "harmful" else "refusal"
        assert r["target"] == expected_target
    assert any(r["flipped"] and r["target"] == "refusal" for r in attacks)
    assert any(r["flipped"] and r["target"] == "compliance" for r in attacks)


def test_sampled_flips_reproduce_on_the_model(demo_run, demo_subject):
    """Regenerate a sample of the claimed flips greedily and judge them ourselves.

    ``demo_subject`` (conftest) is ``Subject.load(ensure_demo_model(0))``: the audited model.
    """
    assert Path(demo_subject.name) == ensure_demo_model(0)
    judge = RefusalJudge.default()
    max_new = demo_run.json("summary.json")["config"]["max_new_tokens"]
    flips = [r for r in demo_run.jsonl("attacks.jsonl") if r["flipped"]]
    sample = [r for r in flips if r["target"] == "compliance"][:4]
    sample += [r for r in flips if r["target"] == "refusal"][:4]
    for r in sample:
        before = demo_subject.generate([r["original"]], max_new)[0]
        after = demo_subject.generate([r["variant"]], max_new)[0]
        assert after == r["response_after"]
        wants_refusal = r["target"] == "refusal"
        assert judge.is_refusal(after) == wants_refusal, (r["variant"], after)
        assert judge.is_refusal(before) != wants_refusal, (r["original"], before)


def test_report_html_is_self_contained(demo_run):
    html = (demo_run.out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "data:image/png;base64," in html
    assert 'src="http' not in html and 'href="http' not in html
    assert "share" in html and "what" in html.lower()


def test_demo_training_is_deterministic(demo_run, tmp_path):
    """Same seed, same weights: bit-exact state dicts (and the same tokenizer).

    Trained for 30 of the demo's steps to keep the suite fast; any nondeterminism (data order,
    init, dropout, threading) shows in the first steps. A different seed must differ, so the
    comparison can fail.
    """

    def train(name: str, seed: int) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        train_demo_model(folder, seed=seed, steps=30)
        return folder

    first, second, other = train("a", 0), train("b", 0), train("c", 1)
    a = load_file(str(first / "model.safetensors"))
    b = load_file(str(second / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    c = load_file(str(other / "model.safetensors"))
    assert any(a[k].shape != c[k].shape or not torch.equal(a[k], c[k]) for k in a)
    assert demo_prompts(0) == demo_prompts(0)
    assert demo_prompts(0) != demo_prompts(1)


def test_probe_report_rerenders_from_the_directory_alone(demo_run, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(demo_run.out, copy)
    original_md = (copy / "report.md").read_text(encoding="utf-8")
    for name in ("report.html", "report.md"):
        (copy / name).unlink()
    shutil.rmtree(copy / "figures")

    def forbidden(*args, **kwargs):
        raise AssertionError("probe report must not load a model")

    monkeypatch.setattr(probe.subject.text.Subject, "load", forbidden)
    monkeypatch.setenv("PROBE_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert main(["report", str(copy)]) == 0
    out = capsys.readouterr().out
    assert str(copy / "report.html") in out
    html = (copy / "report.html").read_text(encoding="utf-8")
    assert "share" in html and "<script" not in html.lower()
    assert (copy / "report.md").read_text(encoding="utf-8") == original_md
    assert sorted(p.name for p in (copy / "figures").glob("*.png")) == sorted(
        p.name for p in (demo_run.out / "figures").glob("*.png")
    )
    assert not (tmp_path / "empty-cache").exists()


def test_probe_report_deletes_only_the_figures_it_wrote(demo_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(demo_run.out, copy)
    figures = copy / "figures"
    manifest = json.loads((figures / ".probe-figures.json").read_text(encoding="utf-8"))["files"]
    assert sorted(manifest) == sorted(p.name for p in figures.glob("*.png"))
    (figures / "image_0001.png").write_bytes(b"\x89PNG the user's own picture")
    (figures / "notes.txt").write_text("mine")
    (figures / "stale.png").write_bytes(b"\x89PNG")  # drawn by an earlier render, now unsupported
    (figures / ".probe-figures.json").write_text(json.dumps({"files": [*manifest, "stale.png"]}))
    assert main(["report", str(copy)]) == 0
    assert (figures / "image_0001.png").read_bytes() == b"\x89PNG the user's own picture"
    assert (figures / "notes.txt").read_text() == "mine"
    assert not (figures / "stale.png").exists()
    rewritten = json.loads((figures / ".probe-figures.json").read_text())["files"]
    assert sorted(rewritten) == sorted(manifest)


def test_thorough_recipe_from_the_command_line(demo_run, demo_model_dir, tmp_path, capsys):
    """`--attack-recipe thorough` (the default, then a wider search where it failed) finds at
    least the default's flips; it is a result-determining setting, so a rerun without it is
    refused."""
    out = tmp_path / "thorough"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PROBE_CACHE_DIR", str(demo_model_dir.parent))
            assert main(["audit", "--attack-recipe", "thorough", "--out", str(out)]) == 0
            summary = json.loads((out / "summary.json").read_text())
            assert summary["config"]["attack_recipe"] == "thorough"
            default = demo_run.json("summary.json")["metrics"]
            for name in ("asr_one_word", "over_refusal_one_word"):
                assert summary["metrics"][name] >= default[name], name
            capsys.readouterr()
            assert main(["audit", "--out", str(out)]) != 0
            assert "attack_recipe: 'thorough' -> None" in capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
