"""Sampling methods over word coalitions: Shapley value sampling and LIME (captum).

Captum sees one presence indicator per *token of the user's prompt* and a feature mask that
groups the tokens of a word into one feature, so a word is always kept or removed as a whole;
chat-template tokens are not part of the input, so they are never perturbed. A coalition is
scored as the margin of the prompt with the absent words deleted (or, with a baseline token,
replaced), through ``Subject.shared_prefix_margins``: the template prefix and everything before
the first absent word come from the KV cache. Sampling is seeded, so results repeat.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from probe.attribution.base import (
    Attributor,
    WordAttribution,
    WordPerturber,
    baseline_token_id,
    encode_prompts,
    make_attribution,
    register,
)
from probe.data import Prompt
from probe.subject.text import Subject

PERTURBATIONS_PER_CALL = 4
"""Coalitions captum hands the forward function at once, per ``batch_size`` of the subject
(``Subject.shared_prefix_margins`` packs and batches them itself)."""


class _CoalitionAttributor(Attributor):
    """A captum perturbation method run on word-presence indicators of the prompt's tokens."""

    def __init__(self, n_samples: int, seed: int = 0, baseline_token: str | None = None) -> None:
        self.n_samples = n_samples
        self.seed = seed
        self.baseline_token = baseline_token

    @abstractmethod
    def run(
        self, forward, inputs: torch.Tensor, feature_mask: torch.Tensor, per_eval: int
    ) -> torch.Tensor:
        """Captum attributions, shaped like ``inputs`` (each token holds its word's score)."""

    def attribute(
        self, subject: Subject, prompts: Sequence[Prompt], *, progress: bool = False
    ) -> list[WordAttribution]:
        baseline_id = None
        if self.baseline_token is not None:
            baseline_id = baseline_token_id(subject, self.baseline_token)
        results = []
        encoded = encode_prompts(subject, prompts)
        for prompt, enc in tqdm(
            list(zip(prompts, encoded, strict=True)), desc=self.name, disable=not progress
        ):
            perturber = WordPerturber(enc, baseline_id)
            owners = [w for w in enc.token_word if w >= 0]  # word of each prompt token
            feature = {w: i for i, w in enumerate(perturber.features)}
            feature_mask = torch.tensor([[feature[w] for w in owners]])
            first_token = [owners.index(w) for w in perturber.features]

            def forward(present: torch.Tensor, perturber=perturber, first_token=first_token):
                rows = present[:, first_token].cpu().numpy() < 0.5
                variants = [
                    perturber.apply(np.asarray(perturber.features)[row].tolist()) for row in rows
                ]
                margins = subject.shared_prefix_margins(perturber.encoded.input_ids, variants)
                return torch.tensor(margins)

            scores = [0.0] * len(enc.words)
            margins = forward(torch.tensor([[1.0] * len(owners), [0.0] * len(owners)]))
            if owners:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed)
                    attributions = self.run(
                        forward,
                        torch.ones((1, len(owners))),
                        feature_mask,
                        PERTURBATIONS_PER_CALL * subject.batch_size,
                    )
                for word, token in zip(perturber.features, first_token, strict=True):
                    scores[word] = float(attributions[0, token])
            extra = {"empty_margin": float(margins[1]), "n_samples": self.n_samples}
            results.append(make_attribution(prompt, enc, scores, margins[0], self.name, extra))
        return results


@register
class ShapleySampling(_CoalitionAttributor):
    """Shapley value sampling over words (captum ``ShapleyValueSampling``).

    Each sampled permutation adds the words one by one, so the scores of a prompt always sum
    to ``margin - empty_margin`` (the margin with every word removed): efficiency holds exactly.
    """

    name = "shapley"

    def __init__(
        self, n_samples: int = 10, seed: int = 0, baseline_token: str | None = None
    ) -> None:
        super().__init__(n_samples, seed, baseline_token)

    def run(self, forward, inputs, feature_mask, per_eval):
        from captum.attr import ShapleyValueSampling

        return ShapleyValueSampling(forward).attribute(
            inputs,
            baselines=0.0,
            feature_mask=feature_mask,
            n_samples=self.n_samples,
            perturbations_per_eval=per_eval,
        )


@register
class Lime(_CoalitionAttributor):
    """LIME over words (captum ``Lime``: random coalitions, exponential cosine kernel, Lasso)."""

    name = "lime"

    def __init__(
        self,
        n_samples: int = 200,
        seed: int = 0,
        baseline_token: str | None = None,
        alpha: float = 0.01,
    ) -> None:
        super().__init__(n_samples, seed, baseline_token)
        self.alpha = alpha

    def run(self, forward, inputs, feature_mask, per_eval):
        from captum._utils.models.linear_model import SkLearnLasso
        from captum.attr import Lime as CaptumLime

        return CaptumLime(forward, interpretable_model=SkLearnLasso(alpha=self.alpha)).attribute(
            inputs,
            baselines=0.0,
            feature_mask=feature_mask,
            n_samples=self.n_samples,
            perturbations_per_eval=per_eval,
        )
