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
import time
from pathlib import Path

import pytest
from paths import REPO

SAME = ("responses.jsonl", "attributions.jsonl", "attacks.jsonl", "lexicon.json", "lexicon.csv")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _audit(
    launcher: list[str],
    run: Path,
    cache: Path,
    program: tuple[str, ...] = ("-m", "probe.cli"),
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PROBE_CACHE_DIR=str(cache), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    args = ["audit", "--out", str(run), "--max-prompts", "64", "--batch-size", "8", *extra]
    return subprocess.run(
        [*launcher, *program, *args],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def _torchrun() -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
    ]  # fmt: skip


@pytest.mark.slow
def test_two_processes_give_the_one_process_run(demo_model_dir, tmp_path):
    cache = demo_model_dir.parent
    one, two = tmp_path / "one", tmp_path / "two"
    single = _audit([sys.executable], one, cache)
    assert single.returncode == 0, single.stderr[-3000:]
    pair = _audit(_torchrun(), two, cache)
    assert pair.returncode == 0, pair.stderr[-3000:]
    assert pair.stdout.count("report written") == 1  # rank 0 speaks for the run

    first = json.loads((one / "summary.json").read_text())
    second = json.loads((two / "summary.json").read_text())
    assert first["world_size"] == 1 and second["world_size"] == 2
    assert len(first["rank_busy_s"]["attack"]) == 1 and len(second["rank_busy_s"]["attack"]) == 2
    assert second["status"] == "complete"
    for name in SAME:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert first["metrics"] == second["metrics"]
    assert first["counts"] == second["counts"]
    assert first["margin_calibration"] == second["margin_calibration"]
    assert not (two / ".probe" / "parts").exists()  # rank 1's records were merged
    assert (two / "report.html").is_file()


# Rank 1's model fails while computing margins (a lost GPU, a kernel error): a real exception
# from inside the calibration step, raised on one rank only. The program is probe's own CLI.
FAULTY_RANK_1 = """
import os, sys
from probe.subject.text import Subject

if os.environ["RANK"] == "1":
    def prompt_margins(self, *args, **kwargs):
        raise RuntimeError("device lost on rank 1")

    Subject.prompt_margins = prompt_margins

from probe.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_rank_that_crashes_stops_every_rank_with_its_reason(demo_model_dir, tmp_path):
    """Rank 0 does not wait for a dead peer: every rank stops, and the summary says why."""
    program = tmp_path / "faulty.py"
    program.write_text(FAULTY_RANK_1)
    run = tmp_path / "run"
    pair = _audit(_torchrun(), run, demo_model_dir.parent, (str(program),))
    assert pair.returncode != 0
    assert "probe: error: rank 1 failed: RuntimeError: device lost on rank 1" in pair.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "ProbeError: rank 1 failed: RuntimeError: device lost on rank 1"
    assert summary["stages_completed"] == ["load", "generate_and_judge"]


# Rank 1 hangs while computing margins (a wedged GPU, a deadlocked kernel): it neither
# finishes nor fails, so only the process group's timeout can free rank 0.
HUNG_RANK_1 = """
import os, sys, time
from probe.subject.text import Subject

if os.environ["RANK"] == "1":
    def prompt_margins(self, *args, **kwargs):
        time.sleep(600)

    Subject.prompt_margins = prompt_margins

from probe.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_hung_rank_is_given_up_on_after_the_dist_timeout(demo_model_dir, tmp_path):
    """Rank 0 waits --dist-timeout seconds (not the 2 h default), then stops with one line and
    a failed summary; what the earlier stages wrote stays for a rerun."""
    program = tmp_path / "hung.py"
    program.write_text(HUNG_RANK_1)
    run = tmp_path / "run"
    started = time.monotonic()
    pair = _audit(
        _torchrun(), run, demo_model_dir.parent, (str(program),), ("--dist-timeout", "20")
    )
    assert pair.returncode != 0
    assert time.monotonic() - started < 300
    assert "probe: error: rank 0: the other processes did not answer" in pair.stderr
    assert "--dist-timeout (20 s)" in pair.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "did not answer" in summary["error"]
    assert summary["stages_completed"] == ["load", "generate_and_judge"]
    assert len((run / "responses.jsonl").read_text().splitlines()) == 64


# Every chunk takes 0.2 s, except rank 1's first (4 s): with chunks claimed one at a time,
# rank 0 takes nearly all of them (a fixed split would leave it waiting with half of them).
UNEVEN_CHUNKS = """
import json, sys, time
from probe.parallel import World

world = World.from_env("cpu")
for step in range(2):  # each share() call is its own counter
    mine = []
    for index in world.share(12):
        time.sleep(4 if world.rank == 1 and not mine else 0.2)
        mine.append(index)
    claimed = world.gather(mine)
    if world.is_main:
        print(json.dumps(claimed))
world.close(True)
"""


def test_ranks_claim_chunks_as_they_finish(tmp_path):
    program = tmp_path / "uneven.py"
    program.write_text(UNEVEN_CHUNKS)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [*_torchrun(), str(program)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(steps) == 2
    for rank0, rank1 in steps:
        assert sorted(rank0 + rank1) == list(range(12))  # each chunk exactly once
        assert len(rank1) <= 2 and len(rank0) >= 10, steps  # rank 0 did not wait for rank 1
