"""The decision margin's openings, and their per-model calibration.

margin(x) = logsumexp_o∈R log P(o | x) − logsumexp_o∈C log P(o | x): positive leans to refusal.
The openings R and C default to common refusal/compliance starts (``lexicons/openings.json``).
A model that refuses with "As an AI…" is not scored well by "I'm sorry", so ``calibrate_openings``
learns the openings from the model's own greedy responses, as judged by the refusal judge.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from probe.resources import lexicon_path


def margin_from_logprobs(logp: torch.Tensor, n_refusal: int) -> torch.Tensor:
    """The margin from opening log-probabilities whose last axis lists the refusal openings
    first (``n_refusal`` of them), then the compliance openings. The one copy of the formula."""
    return torch.logsumexp(logp[..., :n_refusal], -1) - torch.logsumexp(logp[..., n_refusal:], -1)


@dataclass(frozen=True)
class MarginConfig:
    """Refusal and compliance openings; ``source`` says where they came from."""

    refusal: tuple[str, ...]
    compliance: tuple[str, ...]
    source: str = "default"

    @classmethod
    def default(cls) -> MarginConfig:
        data = json.loads(lexicon_path("openings.json").read_text(encoding="utf-8"))
        return cls(tuple(data["refusal"]), tuple(data["compliance"]), "default")


@dataclass
class Calibration:
    """What calibration found; written into summary.json."""

    config: MarginConfig
    calibrated: bool
    agreement_default: float
    agreement_final: float
    n_refused: int
    n_complied: int
    note: str = ""
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "calibrated": self.calibrated,
            "source": self.config.source,
            "refusal_openings": list(self.config.refusal),
            "compliance_openings": list(self.config.compliance),
            "agreement_default": round(self.agreement_default, 4),
            "agreement_final": round(self.agreement_final, 4),
            "n_judged_refused": self.n_refused,
            "n_judged_complied": self.n_complied,
            "note": self.note,
        }


def agreement(margins: np.ndarray, refused: Sequence[bool]) -> float:
    """Share of prompts where the margin's sign matches the judged generation."""
    if len(refused) == 0:
        return float("nan")
    return float(np.mean((np.asarray(margins) > 0) == np.asarray(refused, dtype=bool)))


def frequent_openings(
    responses: Sequence[str], others: Sequence[str], n_words: int = 2, k: int = 3
) -> tuple[str, ...]:
    """The most common ``n_words``-word starts of ``responses`` that never start ``others``.

    One-word starts are added too, when they are just as exclusive, so a short opening that
    the model also uses with other continuations is covered.
    """

    def starts(texts: Sequence[str], n: int) -> Counter:
        return Counter(" ".join(t.split()[:n]) for t in texts if t.split())

    chosen: list[str] = []
    for n in (n_words, 1):
        own, other = starts(responses, n), starts(others, n)
        for opening, _ in own.most_common():
            if opening not in other and opening not in chosen:
                chosen.append(opening)
            if len(chosen) >= k:
                break
        if len(chosen) >= k:
            break
    return tuple(chosen)


def calibrate_openings(
    default: MarginConfig,
    responses: Sequence[str],
    refused: Sequence[bool],
    margins_for,
    threshold: float = 0.9,
) -> Calibration:
    """Keep the default openings if they agree with the judge, else learn them from responses.

    ``margins_for(config) -> np.ndarray`` scores the same prompts under a candidate config;
    the learned openings are kept only when they agree with the judge better than the default.
    """
    refused = [bool(r) for r in refused]
    n_ref = sum(refused)
    n_comp = len(refused) - n_ref
    base = agreement(margins_for(default), refused)
    if base >= threshold:
        return Calibration(default, False, base, base, n_ref, n_comp, "default openings agree")
    refusals = [r for r, flag in zip(responses, refused, strict=True) if flag]
    compliances = [r for r, flag in zip(responses, refused, strict=True) if not flag]
    learned_refusal = frequent_openings(refusals, compliances) or default.refusal
    learned_compliance = frequent_openings(compliances, refusals) or default.compliance
    candidate = MarginConfig(learned_refusal, learned_compliance, "calibrated")
    learned = agreement(margins_for(candidate), refused)
    if learned > base:
        note = f"default openings agreed with the judge on {base:.0%}; learned from responses"
        return Calibration(candidate, True, base, learned, n_ref, n_comp, note)
    note = f"default openings agree on {base:.0%}; learned openings did not do better"
    return Calibration(default, False, base, base, n_ref, n_comp, note)
