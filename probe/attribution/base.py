"""Word-level attribution results and the method registry.

Every method answers the same question — how much does each word of the user's prompt push the
model toward refusal — and returns ``WordAttribution`` records (positive = toward refusal).
Methods are looked up by name; adding one means adding one registered class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probe.data import Prompt
from probe.errors import ProbeError
from probe.query import Query
from probe.subject.text import EncodedPrompt, Subject


@dataclass
class WordAttribution:
    """Scores for the words of one prompt; one line of attributions.jsonl.

    A prompt with an image has its absolute path in ``extra["image"]``.
    """

    id: str
    prompt: str
    label: str | None
    words: list[str]
    spans: list[tuple[int, int]]
    scores: list[float]
    margin: float
    method: str
    extra: dict = field(default_factory=dict)

    @property
    def query(self) -> Query:
        """The query the scores explain: the prompt text with its image, if it had one."""
        image = self.extra.get("image")
        return Query(self.prompt, Path(image) if image else None)

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


class WordPerturber:
    """Perturbed token sequences of one encoded prompt, a word at a time.

    A perturbed word loses all its tokens (``baseline_id`` None: deletion) or has each token
    replaced by ``baseline_id``. Chat-template and special tokens (word -1) never change.
    ``features`` are the words that own at least one token: only they can be perturbed.
    """

    def __init__(self, encoded: EncodedPrompt, baseline_id: int | None = None) -> None:
        self.encoded = encoded
        self.baseline_id = baseline_id
        self.features = sorted({w for w in encoded.token_word if w >= 0})

    def apply(self, removed: Iterable[int]) -> list[int]:
        """Token ids with the words in ``removed`` (word indices) perturbed."""
        removed = set(removed)
        enc = self.encoded
        if self.baseline_id is None:
            return enc.without_words(removed)
        return [
            self.baseline_id if w in removed else t
            for t, w in zip(enc.input_ids, enc.token_word, strict=True)
        ]


def baseline_token_id(subject: Subject, token: str | None) -> int:
    """Id of a baseline token: ``token`` itself, else the unknown token, else padding."""
    tokenizer = subject.tokenizer
    if token is None:
        return tokenizer.unk_token_id if tokenizer.unk_token_id is not None else subject.pad_id
    vocab = tokenizer.get_vocab()
    if token not in vocab:
        raise ProbeError(f"baseline token {token!r} is not in the model's vocabulary")
    return int(vocab[token])


def encode_prompts(subject: Subject, prompts: Sequence[Prompt]) -> list[EncodedPrompt]:
    """Encode every prompt; a prompt that cannot be encoded is named in the error."""
    encoded = []
    for prompt in prompts:
        try:
            encoded.append(subject.encode(prompt.query))
        except ProbeError as exc:
            raise ProbeError(f"prompt {prompt.id}: {exc}") from None
    return encoded


def token_to_word_scores(encoded: EncodedPrompt, token_scores: Sequence[float]) -> list[float]:
    """Sum token scores into the words that own them; template tokens are dropped."""
    words = np.zeros(len(encoded.words))
    owners = np.asarray(encoded.token_word)
    keep = owners >= 0
    np.add.at(words, owners[keep], np.asarray(token_scores, dtype=np.float64)[keep])
    return words.tolist()


def make_attribution(
    prompt: Prompt,
    encoded: EncodedPrompt,
    scores: Sequence[float],
    margin: float,
    method: str,
    extra: dict | None = None,
) -> WordAttribution:
    """The ``WordAttribution`` record of one prompt."""
    extra = dict(extra or {})
    if prompt.image is not None:
        extra["image"] = str(prompt.image.resolve())
    return WordAttribution(
        id=prompt.id,
        prompt=prompt.prompt,
        label=prompt.label,
        words=[w.text for w in encoded.words],
        spans=[(w.start, w.end) for w in encoded.words],
        scores=[float(s) for s in scores],
        margin=float(margin),
        method=method,
        extra=extra,
    )


class Attributor(ABC):
    """A word-attribution method targeting the decision margin.

    ``no_images_because``: None if the method scores prompts with images (a VLM's), else why
    it cannot (the error a user gets).
    """

    name: str = ""
    no_images_because: str | None = None

    def check_images(self, prompts: Sequence[Prompt]) -> None:
        """Raise a ProbeError if any prompt has an image and this method cannot score one."""
        with_image = next((p for p in prompts if p.image is not None), None)
        if with_image is not None and self.no_images_because is not None:
            raise ProbeError(
                f"prompt {with_image.id}: method {self.name!r} cannot score prompts with "
                f"images: {self.no_images_because}"
            )

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
