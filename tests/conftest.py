"""Shared fixtures: tiny chat models of every tokenizer family, loaded through Subject.load.

Tests run offline: the Hugging Face hub is switched off before transformers is imported, so an
unknown model name fails fast instead of waiting on the network.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402
from tiny_models import FAMILIES, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """family -> folder of a random tiny Llama + trained tokenizer (save_pretrained)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: build_tiny_model(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_subjects(tiny_model_dirs):
    """family -> Subject loaded from its folder with Subject.load (the real loading path).

    Shared by many tests: do not change their state; wrap with ``Subject(s.model, s.tokenizer,
    ...)`` for other settings.
    """
    from probe.subject.text import Subject

    return {family: Subject.load(folder) for family, folder in tiny_model_dirs.items()}


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory) -> Path:
    """The trained demo model folder, trained once per session (or reused from
    $PROBE_CACHE_DIR when CI set one)."""
    from probe.demos.text import ensure_demo_model

    if not os.environ.get("PROBE_CACHE_DIR"):
        os.environ["PROBE_CACHE_DIR"] = str(tmp_path_factory.mktemp("probe-cache"))
    return ensure_demo_model(0)


@pytest.fixture(scope="session")
def demo_subject(demo_model_dir):
    """The demo model loaded through Subject.load; shared, do not change its state."""
    from probe.subject.text import Subject

    return Subject.load(demo_model_dir)


@pytest.fixture
def probe_cache_dir(tmp_path, monkeypatch) -> Path:
    """A private PROBE_CACHE_DIR, so the demo model is never written to the user's cache."""
    folder = tmp_path / "probe-cache"
    monkeypatch.setenv("PROBE_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def torch_single_thread():
    """One intra-op thread for a module of tiny-model tests, restored afterwards.

    Tiny models gain nothing from intra-op threads, and on a busy machine the threads wait on
    each other: the same margins took 0.6 s on one thread and 40 s on two (load ~11, 2 cores).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
