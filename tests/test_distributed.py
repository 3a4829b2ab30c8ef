"""Data-parallel `probe audit` under torchrun on CPU (gloo): the same run as one process.

Two processes share every stage's chunks, rank 0 fits the lexicon on all attributions and
writes the run directory; the records, the lexicon, the verified edits and the metrics must be
those of a one-process run on the same prompts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAME = ("responses.jsonl", "attributions.jsonl", "attacks.jsonl", "lexicon.json", "lexicon.csv")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _audit(launcher: list[str], run: Path, cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PROBE_CACHE_DIR=str(cache), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    args = ["audit", "--out", str(run), "--max-prompts", "64", "--batch-size", "8"]
    return subprocess.run(
        [*launcher, "-m", "probe.cli", *args],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


@pytest.mark.slow
def test_two_processes_give_the_one_process_run(demo_model_dir, tmp_path):
    cache = demo_model_dir.parent
    one, two = tmp_path / "one", tmp_path / "two"
    single = _audit([sys.executable], one, cache)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
    ]  # fmt: skip
    pair = _audit(torchrun, two, cache)
    assert pair.returncode == 0, pair.stderr[-3000:]
    assert pair.stdout.count("report written") == 1  # rank 0 speaks for the run

    first = json.loads((one / "summary.json").read_text())
    second = json.loads((two / "summary.json").read_text())
    assert first["world_size"] == 1 and second["world_size"] == 2
    assert second["status"] == "complete"
    for name in SAME:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert first["metrics"] == second["metrics"]
    assert first["counts"] == second["counts"]
    assert first["margin_calibration"] == second["margin_calibration"]
    assert not (two / ".probe" / "parts").exists()  # rank 1's records were merged
    assert (two / "report.html").is_file()
