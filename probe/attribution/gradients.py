"""Gradient methods on the input embeddings: gradient x input and integrated gradients.

Both differentiate ``Subject.margins_from_embeddings`` (the decision margin as a function of the
chat-formatted sequence's input embeddings, as ``Subject.embed`` makes them: a VLM's image
features included, held fixed) and sum each token's score over the hidden size and
then over the tokens of a word. Template tokens are never scored: integrated gradients gives
them exactly zero (their baseline is themselves) and every method drops them when aggregating.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    token_to_word_scores,
)
from probe.data import Prompt
from probe.subject.text import Subject


@register
class GradientXInput(Attributor):
    """Gradient of the margin w.r.t. each input embedding, dotted with that embedding.

    On a VLM the image features sit at their positions as constants: only text-token
    embeddings are differentiated, and image tokens own no word.
    """

    name = "gradient-x-input"

    def attribute(
        self, subject: Subject, prompts: Sequence[Prompt], *, progress: bool = False
    ) -> list[WordAttribution]:
        results = []
        encoded = encode_prompts(subject, prompts)
        for prompt, enc in tqdm(
            list(zip(prompts, encoded, strict=True)), desc=self.name, disable=not progress
        ):
            ids = torch.tensor([enc.input_ids], device=subject.device)
            with torch.no_grad():
                embeds = subject.embed(ids)
            embeds.requires_grad_(True)
            margin = subject.margins_from_embeddings(embeds)
            (grad,) = torch.autograd.grad(margin.sum(), embeds)
            token_scores = (grad * embeds).sum(-1)[0].detach().double().cpu().tolist()
            results.append(
                make_attribution(
                    prompt, enc, token_to_word_scores(enc, token_scores), margin.item(), self.name
                )
            )
        return results


@register
class IntegratedGradients(Attributor):
    """Integrated gradients (captum ``IntegratedGradients`` on the input embeddings).

    The path runs from the embeddings of a baseline sequence, in which every prompt token is the
    baseline token (default: unknown, else padding) and template tokens are unchanged, to the
    prompt's embeddings; a VLM's image features are the same at both ends, so the path moves
    the text only. (This is captum's ``LayerIntegratedGradients`` on the embedding layer, done
    on the embeddings ``Subject.embed`` makes, which also hold a VLM's image features.) Per
    prompt ``extra`` holds ``ig_delta`` (captum's convergence delta: sum of all scores minus
    the margin difference), ``ig_steps`` and ``baseline_margin``, so completeness reads
    ``sum(scores) == margin - baseline_margin + ig_delta``.
    """

    name = "integrated-gradients"

    def __init__(
        self, n_steps: int = 50, method: str = "gausslegendre", baseline_token: str | None = None
    ) -> None:
        self.n_steps = n_steps
        self.method = method
        self.baseline_token = baseline_token

    def attribute(
        self, subject: Subject, prompts: Sequence[Prompt], *, progress: bool = False
    ) -> list[WordAttribution]:
        from captum.attr import IntegratedGradients as CaptumIntegratedGradients

        baseline_id = baseline_token_id(subject, self.baseline_token)
        integrated = CaptumIntegratedGradients(
            lambda embeds: subject.margins_from_embeddings(embeds)
        )
        results = []
        encoded = encode_prompts(subject, prompts)
        for prompt, enc in tqdm(
            list(zip(prompts, encoded, strict=True)), desc=self.name, disable=not progress
        ):
            perturber = WordPerturber(enc, baseline_id)
            ids = torch.tensor(
                [enc.input_ids, perturber.apply(perturber.features)], device=subject.device
            )
            with torch.no_grad():
                embeds = subject.embed(ids)
            attributions, delta = integrated.attribute(
                embeds[:1],
                baselines=embeds[1:],
                n_steps=self.n_steps,
                method=self.method,
                internal_batch_size=subject.batch_size,
                return_convergence_delta=True,
            )
            token_scores = attributions.sum(-1)[0].detach().double().cpu().numpy()
            with torch.no_grad():
                margins = subject.margins_from_embeddings(embeds).double().cpu().numpy()
            extra = {
                "ig_delta": float(delta.item()),
                "ig_steps": self.n_steps,
                "baseline_margin": float(margins[1]),
            }
            scores = token_to_word_scores(enc, token_scores)
            results.append(make_attribution(prompt, enc, scores, margins[0], self.name, extra))
        return results
