"""Never clobber: ownership, output-path checks, the lock and atomic writes (no model needed).

Each case here destroyed or mixed a user's files before run directories had a marker and a
lock; every check must fire before any model is loaded (``no_model`` fails the test if one is).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, run_main

import probe.demos.text
import probe.pipeline
from probe.cli import lexicon_paths
from probe.errors import ProbeError
from probe.lexicon.table import TriggerLexicon
from probe.rundir import (
    Appender,
    RunDir,
    is_locked,
    read_appended,
    read_figure_manifest,
    read_jsonl,
    remove_own_figures,
    write_figure_manifest,
    write_json,
    write_jsonl,
)


@pytest.fixture
def no_model(monkeypatch, probe_cache_dir):
    """Fail the test if anything loads or trains a model."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(probe.pipeline, "load_subject", forbidden)
    monkeypatch.setattr(probe.demos.text, "train_demo_model", forbidden)
    monkeypatch.setattr("probe.subject.text.Subject.load", forbidden)


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A folder of the user's own files that happen to share probe's file names."""
    folder = tmp_path / "mine"
    (folder / "figures").mkdir(parents=True)
    (folder / "report.md").write_text("my notes\n")
    (folder / "summary.json").write_text('{"mine": true}\n')
    (folder / "figures" / "image_0001.png").write_bytes(b"\x89PNG my picture")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_audit_refuses_a_foreign_folder(capsys, no_model, user_folder, monkeypatch):
    before = _snapshot(user_folder)
    code, _, err = run_main(capsys, "audit", "--out", user_folder)
    assert_one_line_error(code, err, str(user_folder), "not made by probe")
    monkeypatch.chdir(user_folder)
    code, _, err = run_main(capsys, "audit", "--out", ".")
    assert_one_line_error(code, err, "not made by probe")
    assert _snapshot(user_folder) == before


def test_audit_into_an_empty_folder_is_fine_and_marks_it(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with RunDir.open(folder):
        pass
    assert (folder / ".probe" / "run.json").is_file()
    with RunDir.open(folder):  # probe's own now
        pass


def test_output_file_not_a_folder(capsys, no_model, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run_main(capsys, "audit", "--out", afile)
    assert_one_line_error(code, err, "not a folder")
    assert afile.read_text() == "x"


def test_a_second_run_on_a_locked_directory_is_refused(capsys, no_model, tmp_path):
    folder = tmp_path / "run"
    with RunDir.open(folder):
        assert is_locked(folder)
        code, _, err = run_main(capsys, "audit", "--out", folder)
        assert_one_line_error(code, err, "in use", "pid")
        with pytest.raises(ProbeError, match="in use"):
            RunDir.open(folder)
    assert not is_locked(folder)


def test_a_killed_holder_releases_the_lock(tmp_path):
    """The lock is an flock: it dies with its process, even by SIGKILL."""
    folder = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import os, signal
        from probe.rundir import RunDir
        RunDir.open({str(folder)!r})
        print("locked", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "locked" in result.stdout and result.returncode == -9
    assert not is_locked(folder)
    RunDir.open(folder).close()


def test_attribute_output_equal_to_its_input_is_refused(capsys, no_model, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Tell me how to bake bread", "label": "benign"}\n')
    before = prompts.read_bytes()
    code, _, err = run_main(capsys, "attribute", "--prompts", prompts, "--out", prompts)
    assert_one_line_error(code, err, "also an input")
    assert prompts.read_bytes() == before


def test_attribute_refuses_a_foreign_output_file(capsys, no_model, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Tell me how to bake bread", "label": "benign"}\n')
    theirs = tmp_path / "theirs.jsonl"
    theirs.write_text("precious\n")
    code, _, err = run_main(capsys, "attribute", "--prompts", prompts, "--out", theirs)
    assert_one_line_error(code, err, "not written by probe")
    assert theirs.read_text() == "precious\n"


def test_a_bad_output_path_fails_before_compute(capsys, no_model, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Tell me how to bake bread", "label": "benign"}\n')
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    lexicon = tmp_path / "lex.json"
    lexicon.write_text('{"entries": []}')
    for command in ("attribute", "attack"):
        extra = ["--lexicon", lexicon] if command == "attack" else []
        code, _, err = run_main(
            capsys, command, "--prompts", prompts, *extra, "--out", blocker / "out.jsonl"
        )
        assert_one_line_error(code, err, "blocker")
    code, _, err = run_main(capsys, "audit", "--out", blocker / "run")
    assert_one_line_error(code, err, "blocker")


def _lexicon_file(tmp_path: Path) -> Path:
    attributions = tmp_path / "attr.jsonl"
    rows = [
        {"id": f"p{i}", "prompt": f"share the {w}", "label": "harmful",
         "words": ["share", "the", w], "scores": [1.0 + i / 10, 0.0, 0.1], "margin": 1.0,
         "method": "occlusion"}
        for i, w in enumerate(["cake", "plan", "list", "map"])
    ]  # fmt: skip
    attributions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return attributions


def test_lexicon_never_overwrites_its_input(capsys, tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("prompt,label\nshare it,harmful\nwhat is it,benign\n")
    before = data.read_bytes()
    code, _, err = run_main(capsys, "lexicon", "--dataset", data, "--out", tmp_path / "train.json")
    assert_one_line_error(code, err, "train.csv", "also an input")
    assert data.read_bytes() == before
    attributions = _lexicon_file(tmp_path)
    before = attributions.read_bytes()
    code, _, err = run_main(
        capsys, "lexicon", "--attributions", attributions, "--out", attributions
    )
    assert_one_line_error(code, err, "also an input")
    assert attributions.read_bytes() == before


def test_lexicon_out_csv_writes_both_files_right(capsys, tmp_path):
    attributions = _lexicon_file(tmp_path)
    out = tmp_path / "lex.csv"
    code, stdout, err = run_main(
        capsys, "lexicon", "--attributions", attributions, "--min-support", "1", "--out", out
    )
    assert code == 0, err
    assert out.read_text().startswith("word,direction")  # a CSV, not JSON overwritten
    lexicon = TriggerLexicon.from_json(tmp_path / "lex.json")
    assert lexicon.top("refusal", 1) == ["share"]
    assert lexicon_paths(Path("a/x.json")) == (Path("a/x.json"), Path("a/x.csv"))
    assert lexicon_paths(Path("a/x.CSV")) == (Path("a/x.json"), Path("a/x.CSV"))
    assert lexicon_paths(Path("a/x")) == (Path("a/x"), Path("a/x.csv"))


def test_lexicon_refuses_to_replace_foreign_files(capsys, tmp_path):
    attributions = _lexicon_file(tmp_path)
    theirs = tmp_path / "lex.csv"
    theirs.write_text("name,age\nann,3\n")
    code, _, err = run_main(
        capsys, "lexicon", "--attributions", attributions, "--out", tmp_path / "lex.json"
    )
    assert_one_line_error(code, err, "not a probe lexicon")
    assert theirs.read_text() == "name,age\nann,3\n"
    assert not (tmp_path / "lex.json").exists()


def test_atomic_json_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"status": "complete"})
    with pytest.raises(TypeError):
        write_json(path, {"status": object()})
    assert json.loads(path.read_text()) == {"status": "complete"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left


def test_appended_records_survive_and_a_cut_line_is_dropped(tmp_path):
    path = tmp_path / "records.jsonl"
    out = Appender(path)
    out.write([{"id": "a"}, {"id": "b"}])
    # flushed: another reader sees both lines while the writer is still open
    assert [r["id"] for r in read_appended(path)] == ["a", "b"]
    out.close()
    with open(path, "a") as handle:
        handle.write('{"id": "c", "sco')  # a kill mid-write
    assert [r["id"] for r in read_appended(path)] == ["a", "b"]
    out = Appender(path)
    out.write([{"id": "c"}])
    out.close()
    assert [r["id"] for r in read_appended(path)] == ["a", "b", "c"]


def test_unicode_line_breaks_inside_records_read_back(tmp_path):
    # JSONL is written with ensure_ascii=False, so U+2028/U+0085 stay raw inside strings.
    path = tmp_path / "responses.jsonl"
    records = [{"id": "a", "prompt": "one\u2028two\x85three\x1cfour"}, {"id": "b"}]
    write_jsonl(path, records)
    assert read_jsonl(path) == records
    assert read_appended(path) == records


def test_record_files_with_a_bom_read_and_bad_bytes_are_one_line(tmp_path):
    path = tmp_path / "attacks.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"id": "a"}\n')
    assert read_jsonl(path) == [{"id": "a"}]
    path.write_bytes(b"\xef\xbb\xbf" + b'{"id": "\xff"}\n')
    with pytest.raises(ProbeError, match=r"attacks.jsonl is not UTF-8 text \(.* at byte 11\)"):
        read_jsonl(path)
    with pytest.raises(ProbeError, match="is not UTF-8 text"):
        read_appended(path)


def test_figures_removed_are_only_probes_own(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("lexicon.png", "image_0000.png", "image_0001.png", "mine.png"):
        (figures / name).write_bytes(b"png")
    write_figure_manifest(figures, ["lexicon.png", "image_0000.png"])
    assert read_figure_manifest(figures) == ["image_0000.png", "lexicon.png"]
    remove_own_figures(figures)
    assert sorted(p.name for p in figures.glob("*.png")) == ["image_0001.png", "mine.png"]


def _killed_run(folder: Path, summary: dict) -> None:
    """A real process opens and locks ``folder``, writes ``summary`` and is SIGKILLed."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from probe.rundir import RunDir, write_summary
        RunDir.open({str(folder)!r})
        write_summary(Path({str(folder)!r}), {summary!r})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -9, result.stderr[-2000:]


def test_a_killed_run_reads_as_stale_not_running(tmp_path, capsys):
    """SIGKILL leaves status "running"; the report and a resume say it was killed."""
    from probe.audit import open_run
    from probe.pipeline import AuditConfig, identity
    from probe.rundir import KILLED, read_summary, run_status

    folder = tmp_path / "run"
    config = AuditConfig(out=str(folder))
    _killed_run(folder, {"status": "running", "model": "demo", "config": identity(config),
                         "prompts_sha256": "abc", "stages_completed": ["load"]})  # fmt: skip
    summary = read_summary(folder)
    assert summary is not None and summary["status"] == "running"  # what the dead run left
    assert run_status(folder, summary) == KILLED

    code, out, err = run_main(capsys, "report", folder)
    assert code == 0, err
    assert f"Run status: {KILLED}" in (folder / "report.md").read_text()

    run, previous = open_run(folder, config, "abc")  # the resume path
    try:
        assert previous is not None and previous["status"] == KILLED
        assert "was killed" in capsys.readouterr().err
        # while a live process holds it, a running run is running
        assert run_status(folder, {"status": "running"}) == "running"
    finally:
        run.close()
