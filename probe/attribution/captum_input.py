"""A captum ``InterpretableInput`` for word deletion (kept apart: importing captum is slow)."""

from __future__ import annotations

import torch
from captum.attr import TextTokenInput

from probe.attribution.base import WordPerturber


class WordDeletionInput(TextTokenInput):
    """Captum interpretable input: one presence feature per word; absent words are deleted.

    A ``TextTokenInput`` (the input type ``LLMAttribution`` accepts for token ids) whose
    features are the prompt's words instead of single tokens; template tokens are no feature.
    """

    def __init__(self, perturber: WordPerturber, device: torch.device) -> None:
        self.perturber = perturber
        self.device = device
        self.values = [perturber.encoded.words[w].text for w in perturber.features]
        self.n_itp_features = len(self.values)

    def to_tensor(self) -> torch.Tensor:
        return torch.ones((1, self.n_itp_features))

    def to_model_input(self, perturbed_tensor: torch.Tensor | None = None) -> torch.Tensor:
        removed: list[int] = []
        if perturbed_tensor is not None:
            absent = (perturbed_tensor[0] < 0.5).tolist()
            removed = [w for w, gone in zip(self.perturber.features, absent, strict=True) if gone]
        return torch.tensor([self.perturber.apply(removed)], device=self.device)
