"""Data-parallel runs under ``torchrun`` / ``accelerate launch`` (torch.distributed).

Both launchers set ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with more than one process the
pipeline shards each stage's prompt chunks across ranks (chunk k goes to rank k mod world size),
gathers the records, and rank 0 alone writes the run directory. One process is a world of one,
with no process group at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar, cast

from probe.errors import ProbeError

T = TypeVar("T")


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one): the one that speaks and writes."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class World:
    """This process's place among the processes sharing a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, device: str = "cpu") -> World:
        """The launcher's world; joins (or reuses) the process group when it has > 1 process."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend, timeout=timedelta(hours=2))
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, chunk_index: int) -> bool:
        """Whether this rank computes chunk ``chunk_index``."""
        return chunk_index % self.size == self.rank

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        out: list = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: T | None) -> T:
        """Rank 0's ``value`` on every rank."""
        if self.size == 1:
            return cast(T, value)
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return cast(T, box[0])

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
        if self.size == 1:
            return work()
        failure: Exception | None = None
        result: T | None = None
        try:
            result = work()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the others
            failure = exc
        reports = self.gather(None if failure is None else _describe(failure))
        if failure is not None:
            raise failure
        for rank, report in enumerate(reports):
            if report is not None:
                raise ProbeError(f"rank {rank} failed: {report}")
        return cast(T, result)

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
