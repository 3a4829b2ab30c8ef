"""The notebooks in notebooks/ run top to bottom, offline, in a fresh python3 kernel.

The kernel inherits this process's environment, so PROBE_CACHE_DIR (the demo model cache),
and the offline switches set here reach the notebooks. The demo model is shared
with the rest of the test run when PROBE_CACHE_DIR is already set (CI sets it once); otherwise
a private cache folder is used, never the user's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from paths import REPO, SHARED_DATA

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' (needs nbformat)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (needs nbclient)")

NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 600  # the quickstart's audit cell; every other cell takes seconds


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_there_are_notebooks():
    names = {p.name for p in _notebooks()}
    assert {"quickstart.ipynb", "vlguard_data_cues.ipynb"} <= names


@pytest.fixture
def kernel_env(monkeypatch, tmp_path_factory):
    if not os.environ.get("PROBE_CACHE_DIR"):
        monkeypatch.setenv("PROBE_CACHE_DIR", str(tmp_path_factory.mktemp("probe-cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("MPLBACKEND", "Agg")


def _execute(path: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return notebook


def _text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif "text/plain" in output.get("data", {}):
                parts.append(output["data"]["text/plain"])
    return "".join(parts)


@pytest.mark.slow
def test_quickstart_runs(kernel_env):
    notebook = _execute(NOTEBOOKS / "quickstart.ipynb")
    text = _text(notebook)
    assert "report:" in text and "report.html" in text
    assert "asr_one_word" in text
    assert "refusal" in text and "compliance" in text
    images = [
        o
        for cell in notebook.cells
        for o in cell.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert images, "the figures cell displayed no image"


def test_vlguard_data_cues_runs(kernel_env):
    train = SHARED_DATA / "vlguard" / "train.json"
    if not train.is_file() or os.environ.get("PROBE_SHARED_DIR"):
        pytest.skip(f"shared VLGuard data absent: {train}")
    text = _text(_execute(NOTEBOOKS / "vlguard_data_cues.ipynb"))
    assert "'share' begins 195 unsafe and 0 safe" in text
    assert "== view: first ==" in text and "== view: any ==" in text


def test_vlguard_data_cues_skips_without_shared_data(kernel_env, monkeypatch, tmp_path):
    monkeypatch.setenv("PROBE_SHARED_DIR", str(tmp_path / "no-shared-here"))
    text = _text(_execute(NOTEBOOKS / "vlguard_data_cues.ipynb"))
    assert "skipping the study" in text
    assert "shipped vlguard_cues" in text


@pytest.mark.slow
def test_vlm_walkthrough_runs(kernel_env):
    notebook = _execute(NOTEBOOKS / "vlm_walkthrough.ipynb")
    text = _text(notebook)
    assert "text_reliance_refused_harmful" in text
    assert "refusal  share" in text  # the planted text trigger ranks first
    assert "prompts have an image heatmap" in text
    images = [
        o
        for cell in notebook.cells
        for o in cell.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert images, "no heatmap overlay was displayed"


@pytest.mark.slow
def test_compare_checkpoints_runs(kernel_env):
    text = _text(_execute(NOTEBOOKS / "compare_checkpoints.ipynb"))
    assert "share" in text and "what" in text
    assert text.count("stopped being a trigger") >= 2
    assert "shortcut proofs replayed on the balanced model" in text
    assert "report.html" in text
