"""The attack's goal: which way to push a prompt, when a margin has crossed, what success is."""

from __future__ import annotations

from dataclasses import dataclass

from probe.data import Prompt
from probe.lexicon.table import Direction


@dataclass(frozen=True)
class Goal:
    """Push one prompt toward ``target`` within ``max_queries`` margin queries.

    The margin (log-odds of refusal vs compliance openings) is the cheap score; success is only
    ever a judge verdict on a greedy generation (``succeeded``).
    """

    target: Direction
    max_queries: int

    @property
    def toward(self) -> float:
        """Sign of a margin that has crossed to the target side."""
        return -1.0 if self.target == "compliance" else 1.0

    def progress(self, margin: float) -> float:
        """Larger is closer to the target; > 0 means the margin has crossed."""
        return self.toward * margin

    def succeeded(self, judged_refusal: bool) -> bool:
        return judged_refusal == (self.target == "refusal")


def target_for(prompt: Prompt, refused: bool | None) -> Direction | None:
    """Which way to push: refused harmful -> compliance, answered benign -> refusal."""
    if refused is None:
        return None
    if prompt.label == "harmful" and refused:
        return "compliance"
    if prompt.label == "benign" and not refused:
        return "refusal"
    return None
