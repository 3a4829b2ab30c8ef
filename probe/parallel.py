"""Data-parallel runs under ``torchrun`` / ``accelerate launch`` (torch.distributed).

Both launchers set ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with more than one process the
pipeline shares each stage's prompt chunks out across ranks (``World.share``: a rank that
finishes a chunk claims the next one from a counter in the launcher's store), gathers the
records, and rank 0 alone writes the run directory. One process is a world of one, with no
process group at all.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar, cast

from probe.errors import ProbeError

T = TypeVar("T")

# How long a rank waits in a collective (or for the store) before it gives up on the others: a
# rank can wait a whole chunk of another's work, or rank 0's lexicon fit and report.
DEFAULT_TIMEOUT_S = 7200


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one): the one that speaks and writes."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class World:
    """This process's place among the processes sharing a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    # Seconds each rank spent in ``together`` steps since the last ``take_busy`` (rank order):
    # how evenly a stage's work was shared (the rest of a stage's time, a rank waited).
    busy: list[float] = field(default_factory=list, compare=False, repr=False)
    # The launcher's key-value store (multi-process only) and this run's key prefix in it.
    store: object = field(default=None, compare=False, repr=False)
    run_key: str = ""
    _shares: Iterator[int] = field(default_factory=itertools.count, compare=False, repr=False)

    timeout_s: int = DEFAULT_TIMEOUT_S

    @classmethod
    def from_env(cls, device: str = "cpu", timeout_s: int | None = None) -> World:
        """The launcher's world; joins (or reuses) the process group when it has > 1 process.
        ``timeout_s``: how long a rank waits for the others (``--dist-timeout``)."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        import torch.distributed as dist

        timeout_s = timeout_s or DEFAULT_TIMEOUT_S
        timeout = timedelta(seconds=timeout_s)
        if not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend, timeout=timeout)
        # Both launchers serve a store at MASTER_ADDR:MASTER_PORT (torchrun's agent, or rank 0).
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
            timeout=timeout, wait_for_workers=False,
        )  # fmt: skip
        box = [uuid.uuid4().hex if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        rank, world_size = dist.get_rank(), dist.get_world_size()
        return cls(rank, world_size, local, store=store, run_key=str(box[0]), timeout_s=timeout_s)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, count: int) -> Iterator[int]:
        """The indices of ``count`` work items (chunks) this rank computes, claimed one at a time.

        Every rank draws the next index from one counter in the launcher's store, so a rank
        whose chunks ran fast takes more of them and the ranks finish together, however unequal
        the chunks' costs (an attack stops at a prompt's first flip or runs its whole budget).
        Which rank computes a chunk does not change what it computes: the chunks are fixed and
        the records are put back in prompt order. Every rank must call ``share`` for every step,
        in the same order (each call gets its own counter). A world of one takes 0..count-1.
        """
        if self.size == 1 or self.store is None:
            yield from range(count)
            return
        key = f"probe/{self.run_key}/share{next(self._shares)}"
        while True:
            index = int(self.store.add(key, 1)) - 1  # type: ignore[attr-defined]
            if index >= count:
                return
            yield index

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        out: list = [None] * self.size
        with self._peers_answer():
            dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: T | None) -> T:
        """Rank 0's ``value`` on every rank."""
        if self.size == 1:
            return cast(T, value)
        import torch.distributed as dist

        box = [value if self.is_main else None]
        with self._peers_answer():
            dist.broadcast_object_list(box, src=0)
        return cast(T, box[0])

    @contextlib.contextmanager
    def _peers_answer(self) -> Iterator[None]:
        """A collective that fails (a rank hung past the timeout, or died without a word)
        ends this rank with one line saying so, not a backend traceback."""
        try:
            yield
        except RuntimeError as exc:
            # gloo prefixes its messages with its source location: "[.../pair.cc:553] ..."
            reason = re.sub(r"^\[[^\]]*\]\s*", "", _describe(exc).removeprefix("RuntimeError: "))
            raise ProbeError(
                f"rank {self.rank}: the other processes did not answer ({reason}); a process "
                f"that hangs is given up on after --dist-timeout ({self.timeout_s} s)"
            ) from exc

    def on_main(self, work: Callable[[], T]) -> T:
        """Run ``work`` on rank 0 and share its result; an error there fails every rank."""
        if self.size == 1:
            return work()
        result: tuple[bool, object] = (True, None)
        failure: BaseException | None = None
        if self.is_main:
            try:
                result = (True, work())
            except Exception as exc:  # noqa: BLE001 - re-raised here, reported to the others
                failure, result = exc, (False, str(exc))
        ok, value = self.broadcast(result)
        if failure is not None:
            raise failure
        if not ok:
            raise ProbeError(f"rank 0 stopped: {value}")
        return value  # type: ignore[return-value]

    def together(self, work: Callable[[], T]) -> T:
        """Run this rank's share of a step; if any rank fails, every rank stops, saying why.

        Each rank reports success or its error at the end of the step, so a rank whose share
        raised (a lost GPU, a full disk, a bug) never leaves the others waiting in the next
        collective until the process group times out, and rank 0 records the real cause (not
        the "connection closed" the others would see once it exits). The failing rank re-raises
        its own error; the others raise a ``ProbeError`` naming the rank and the error.
        """
        started = time.perf_counter()
        if self.size == 1:
            value = work()
            self._add_busy([time.perf_counter() - started])
            return value
        failure: Exception | None = None
        result: T | None = None
        try:
            result = work()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the others
            failure = exc
        seconds = time.perf_counter() - started
        reports = self.gather((None if failure is None else _describe(failure), seconds))
        if failure is not None:
            raise failure
        for rank, (report, _) in enumerate(reports):
            if report is not None:
                raise ProbeError(f"rank {rank} failed: {report}")
        self._add_busy([s for _, s in reports])
        return cast(T, result)

    def _add_busy(self, seconds: list[float]) -> None:
        if not self.busy:
            self.busy.extend([0.0] * len(seconds))
        for rank, s in enumerate(seconds):
            self.busy[rank] += s

    def take_busy(self) -> list[float]:
        """Each rank's seconds in ``together`` steps since the last call (then reset)."""
        taken = [round(s, 2) for s in self.busy]
        self.busy.clear()
        return taken

    def close(self, finished: bool) -> None:
        """Leave the process group (each rank, at the end of a run). A rank that exits without
        it can abort in gloo's teardown ("terminate called without an active exception"),
        failing a finished run. ``finished``: every rank got here, so they first wait for each
        other (rank 0 renders the report last); after an error they leave at once."""
        if self.size == 1:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()

    def device(self, device: str) -> str:
        """Each rank's device: ``cuda`` becomes ``cuda:LOCAL_RANK`` in a multi-process run."""
        if self.size > 1 and device == "cuda":
            return f"cuda:{self.local_rank}"
        return device


def _describe(exc: BaseException) -> str:
    """``Type: first line of the message`` (the message alone for a ``ProbeError``)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, ProbeError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
