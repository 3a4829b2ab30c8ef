"""Runs that keep their work and resume; one stage, one result however it is run.

A baseline demo audit runs once (in process); the other runs are compared with it byte for
byte: a rerun into the same directory, runs stopped by SIGTERM and killed by SIGKILL mid-attack
and then resumed, and the stage commands and the Python API on the same prompts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import probe.audit
from probe.audit import AuditConfig
from probe.cli import main
from probe.data import balanced_head, save_prompts
from probe.demos.text import demo_prompts
from probe.errors import ProbeError
from probe.pipeline import attribute_prompts
from probe.rundir import KILLED, is_locked, run_status

BATCH = "4"  # small chunks: many chunk boundaries for a kill to fall between
RECORD_FILES = ("responses.jsonl", "attributions.jsonl", "attacks.jsonl", "lexicon.json")


@pytest.fixture(scope="module")
def cache(request) -> Path:
    """The session's demo-model cache as $PROBE_CACHE_DIR, torch on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = request.getfixturevalue("demo_model_dir").parent
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROBE_CACHE_DIR", str(folder))
        yield folder
    torch.set_num_threads(threads)


def audit(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def baseline(cache, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("baseline") / "run"
    code, _, err = audit("audit", "--out", run, "--batch-size", BATCH)
    assert code == 0, err
    return run


def assert_same_results(run: Path, baseline: Path) -> None:
    for name in RECORD_FILES:
        assert (run / name).read_bytes() == (baseline / name).read_bytes(), name
    assert summary(run)["metrics"] == summary(baseline)["metrics"]
    assert summary(run)["counts"] == summary(baseline)["counts"]


def test_rerun_reuses_every_record(baseline, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(baseline, run)
    code, _, err = audit("audit", "--out", run, "--batch-size", BATCH)
    assert code == 0, err
    result = summary(run)
    prompts = result["counts"]["prompts"]
    attacked = result["counts"]["attacked_harmful"] + result["counts"]["attacked_benign"]
    assert 0 < attacked < prompts
    assert result["resumed"] == {  # the attack stage holds the prompts it attacks
        "generate_and_judge": prompts,
        "attribute": prompts,
        "attack": attacked,
    }
    assert result["previous_status"] == "complete"
    assert_same_results(run, baseline)


@pytest.mark.slow
def test_changed_settings_are_refused_then_fresh_replaces(baseline, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(baseline, run)
    code, _, err = audit("audit", "--out", run, "--batch-size", BATCH, "--max-prompts", "16")
    assert code == 2 and "max_prompts: None -> 16" in err and "--fresh" in err
    assert summary(run)["status"] == "complete"  # the refused run touched nothing
    code, _, err = audit("audit", "--out", run, "--max-prompts", "16", "--fresh")
    assert code == 0, err
    result = summary(run)
    assert result["counts"]["prompts"] == 16
    assert result["resumed"] == {"generate_and_judge": 0, "attribute": 0, "attack": 0}
    lines = (run / "attributions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 16


def test_resume_needs_a_run(cache, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(probe.audit, "load_subject", forbidden)
    code, _, err = audit("audit", "--out", tmp_path / "new", "--resume")
    assert code == 2 and "nothing to resume" in err


def test_a_failed_rerun_leaves_no_stale_results(baseline, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(baseline, run)

    def broken(*args, **kwargs):
        raise ProbeError("cannot load model 'demo': disk on fire")

    monkeypatch.setattr(probe.audit, "load_subject", broken)
    code, _, err = audit("audit", "--out", run, "--batch-size", BATCH)
    assert code == 2 and "disk on fire" in err
    result = summary(run)
    assert result["status"] == "failed" and "disk on fire" in result["error"]
    for stale in ("lexicon.json", "lexicon.csv", "report.html", "report.md"):
        assert not (run / stale).exists(), stale
    assert not list((run / "figures").glob("*.png"))
    # the per-prompt records stay, for the next run to reuse
    assert (run / "attacks.jsonl").read_bytes() == (baseline / "attacks.jsonl").read_bytes()


def test_a_failing_prompt_is_recorded_and_skipped(cache, tmp_path):
    prompts = balanced_head(demo_prompts(0), 24)
    path = tmp_path / "p.jsonl"
    save_prompts(prompts, path)
    with open(path, "a", encoding="utf-8") as handle:
        long = " ".join(["please"] * 400)
        handle.write(json.dumps({"id": "too-long", "prompt": long, "label": "harmful"}) + "\n")
    run = tmp_path / "run"
    code, _, err = audit("audit", "--prompts", path, "--out", run)
    assert code == 0, err
    failures = [json.loads(line) for line in (run / "failures.jsonl").read_text().splitlines()]
    assert [(f["id"], f["stage"]) for f in failures] == [("too-long", "generate")]
    assert "longer than the model's" in failures[0]["error"]
    result = summary(run)
    assert result["failures"] == {"count": 1, "by_stage": {"generate": 1}}
    assert result["counts"]["prompts"] == 24
    ids = [json.loads(line)["id"] for line in (run / "attributions.jsonl").read_text().splitlines()]
    assert ids == [p.id for p in prompts]


def test_stage_commands_and_the_api_match_the_audit(baseline, tmp_path, cache):
    """`probe attribute`, `probe attack` and ``attribute_prompts`` calibrate as the audit does."""
    attributions = tmp_path / "a.jsonl"
    code, _, err = audit("attribute", "--out", attributions, "--batch-size", BATCH)  # no --model
    assert code == 0, err
    assert attributions.read_bytes() == (baseline / "attributions.jsonl").read_bytes()
    state = json.loads((tmp_path / ".a.jsonl.probe" / "summary.json").read_text())
    assert state["margin_calibration"] == summary(baseline)["margin_calibration"]

    found = attribute_prompts(AuditConfig(batch_size=int(BATCH)))
    assert [a.to_record() for a in found.attributions] == [
        json.loads(line) for line in attributions.read_text().splitlines()
    ]
    assert found.calibration.to_dict() == summary(baseline)["margin_calibration"]

    attacks = tmp_path / "b.jsonl"
    code, out, err = audit(
        "attack", "--lexicon", baseline / "lexicon.json", "--out", attacks, "--batch-size", BATCH
    )
    assert code == 0, err
    assert attacks.read_bytes() == (baseline / "attacks.jsonl").read_bytes()
    metrics = json.loads(out.splitlines()[0])
    assert metrics["asr_one_word"] == summary(baseline)["metrics"]["asr_one_word"]


@pytest.mark.slow
def test_user_openings_replace_calibration_everywhere(cache, tmp_path):
    openings = tmp_path / "openings.json"
    openings.write_text(json.dumps({"refusal": ["I cannot"], "compliance": ["Sure"]}))
    run, attributions = tmp_path / "run", tmp_path / "a.jsonl"
    common = ["--max-prompts", "16", "--refusal-openings", openings]
    code, _, err = audit("audit", "--out", run, *common, "--compliance-openings", "Sure")
    assert code == 0, err
    calibration = summary(run)["margin_calibration"]
    assert calibration["source"] == "user" and calibration["refusal_openings"] == ["I cannot"]
    code, _, err = audit(
        "attribute", "--out", attributions, *common, "--compliance-openings", "Sure"
    )
    assert code == 0, err
    assert attributions.read_bytes() == (run / "attributions.jsonl").read_bytes()


# ------------------------------------------------------------------ real processes, real signals


def _env(cache: Path) -> dict:
    env = dict(os.environ, PROBE_CACHE_DIR=str(cache), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env


def _command(run: Path) -> list[str]:
    return [sys.executable, "-m", "probe.cli", "audit", "--out", str(run), "--batch-size", BATCH]


def _start(run: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _command(run), env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_lines(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_bytes().count(b"\n") >= 1:
            return
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.02)
    raise AssertionError(f"no line in {path} after {timeout}s")


@pytest.mark.slow
def test_sigterm_then_sigkill_mid_attack_then_resume(baseline, cache, tmp_path):
    """Stopped by SIGTERM, then killed mid-attack: the rerun ends as an unbroken run did."""
    run = tmp_path / "run"
    first = _start(run, cache)
    _wait_for_lines(run / "attributions.jsonl", first)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert "stopped by SIGTERM" in err and str(run) in err and "resume" in err
    assert summary(run)["status"] == "terminated"

    second = _start(run, cache)
    _wait_for_lines(run / ".probe" / "attack_chunks.jsonl", second)
    second.kill()
    second.wait(timeout=60)
    assert summary(run)["status"] == "running"  # nobody could write it, but
    assert not is_locked(run)  # the lock died with the process
    assert run_status(run, summary(run)) == KILLED
    done_before = (run / ".probe" / "attack_chunks.jsonl").read_bytes().count(b"\n")

    third = subprocess.run(
        _command(run), env=_env(cache), capture_output=True, text=True, timeout=600
    )
    assert third.returncode == 0, third.stderr[-2000:]
    result = summary(run)
    prompts = result["counts"]["prompts"]
    assert result["status"] == "complete" and result["previous_status"] == KILLED
    assert result["resumed"]["generate_and_judge"] == prompts
    assert result["resumed"]["attribute"] == prompts
    # only the chunks the killed run had finished were reused; the rest were recomputed
    assert 0 < result["resumed"]["attack"] == int(BATCH) * done_before < prompts
    assert_same_results(run, baseline)


@pytest.mark.slow
def test_a_second_ctrl_c_during_shutdown_is_contained(cache, tmp_path):
    """Ctrl-C twice in quick succession (the second while probe writes its final status): one
    honest message, exit 130, no traceback, and the run says it was interrupted."""
    run = tmp_path / "run"
    process = _start(run, cache)
    _wait_for_lines(run / "attributions.jsonl", process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted" in err and str(run) in err
    assert summary(run)["status"] == "interrupted"


def test_device_map_and_dtype_reach_the_loader(cache):
    """`--device-map auto --dtype bfloat16` load through accelerate's placement, in bfloat16.

    On a CPU-only machine the map has one device, so transformers dispatches nothing; a
    multi-device split needs a machine with several accelerators."""
    from probe.pipeline import load_subject

    subject = load_subject(AuditConfig(device_map="auto", dtype="bfloat16"))
    assert subject.model.dtype == torch.bfloat16
    assert subject.device.type == "cpu"
    margins = subject.prompt_margins(["Share how to bake bread", "What is a bomb"])
    assert margins.shape == (2,) and all(abs(m) < 1e4 for m in margins.tolist())


def test_interrupted_attribute_keeps_its_records_and_resumes(baseline, tmp_path, monkeypatch):
    """Ctrl-C in `probe attribute` after two chunks: both are on disk, the rerun adds the rest."""
    from probe.attribution.occlusion import _OneWordOcclusion

    original = _OneWordOcclusion.attribute
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    out = tmp_path / "a.jsonl"
    with monkeypatch.context() as mp:
        mp.setattr(_OneWordOcclusion, "attribute", interrupted)
        code, _, err = audit("attribute", "--out", out, "--batch-size", BATCH)
    assert code == 130 and str(out) in err and "resume" in err
    kept = out.read_text(encoding="utf-8").splitlines()
    assert len(kept) == 2 * int(BATCH)
    state = json.loads((tmp_path / ".a.jsonl.probe" / "summary.json").read_text())
    assert state["status"] == "interrupted"
    code, _, err = audit("attribute", "--out", out, "--batch-size", BATCH)
    assert code == 0, err
    state = json.loads((tmp_path / ".a.jsonl.probe" / "summary.json").read_text())
    assert state["resumed"]["attribute"] == 2 * int(BATCH)
    assert out.read_bytes() == (baseline / "attributions.jsonl").read_bytes()
