"""Word-level attribution results and the method registry.

Every method answers the same question — how much does each word of the user's prompt push the
model toward refusal — and returns ``WordAttribution`` records (positive = toward refusal).
Methods are looked up by name; adding one means adding one registered class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from probe.data import Prompt
from probe.errors import ProbeError
from probe.subject import Subject


@dataclass
class WordAttribution:
    """Scores for the words of one prompt; one line of attributions.jsonl."""

    id: str
    prompt: str
    label: str | None
    words: list[str]
    spans: list[tuple[int, int]]
    scores: list[float]
    margin: float
    method: str
    extra: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        record = {
            "id": self.id,
            "prompt": self.prompt,
            "label": self.label,
            "words": self.words,
            "spans": [list(s) for s in self.spans],
            "scores": [round(float(s), 6) for s in self.scores],
            "margin": round(float(self.margin), 6),
            "method": self.method,
        }
        record.update(self.extra)
        return record

    @classmethod
    def from_record(cls, record: dict) -> WordAttribution:
        known = {"id", "prompt", "label", "words", "spans", "scores", "margin", "method"}
        missing = sorted(k for k in ("id", "prompt", "words", "scores") if k not in record)
        if missing:
            raise ProbeError(f"attribution record lacks {', '.join(missing)}")
        if len(record["words"]) != len(record["scores"]):
            raise ProbeError(
                f"attribution record {record['id']}: words and scores differ in length"
            )
        return cls(
            id=str(record["id"]),
            prompt=record["prompt"],
            label=record.get("label"),
            words=list(record["words"]),
            spans=[tuple(s) for s in record.get("spans", [])],
            scores=[float(s) for s in record["scores"]],
            margin=float(record.get("margin", 0.0)),
            method=str(record.get("method", "")),
            extra={k: v for k, v in record.items() if k not in known},
        )


class Attributor(ABC):
    """A word-attribution method targeting the decision margin."""

    name: str = ""

    @abstractmethod
    def attribute(
        self, subject: Subject, prompts: Sequence[Prompt], *, progress: bool = False
    ) -> list[WordAttribution]:
        """Attribute every prompt's margin to its words."""


REGISTRY: dict[str, type[Attributor]] = {}


def register(cls: type[Attributor]) -> type[Attributor]:
    """Class decorator: make a method available by its ``name``."""
    REGISTRY[cls.name] = cls
    return cls


def get_attributor(name: str, **params) -> Attributor:
    """The registered method called ``name``, constructed with ``params``."""
    try:
        return REGISTRY[name](**params)
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ProbeError(f"unknown attribution method {name!r}; known: {known}") from None
