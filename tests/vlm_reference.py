"""Brute-force references for attribution on image prompts, through the VLM's own forward pass.

Every reference here runs the Hugging Face model as its authors meant: the processor's expanded
``input_ids`` (or their input embeddings) together with ``pixel_values``, one opening at a time,
so none of probe's keyed image ids, cached features, packing or KV-cache sharing is involved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from probe.query import Query
from probe.subject.text import EncodedPrompt
from probe.subject.vision import ImageTokens, VisionSubject, open_image


def processor_inputs(subject: VisionSubject, query: Query) -> tuple[list[int], dict]:
    """The processor's expanded ids of a query and its other tensors (pixel_values, ...)."""
    assert query.image is not None
    inputs = subject.processor(
        text=subject.chat_text(query),
        images=open_image(query.image),
        add_special_tokens=False,
        return_tensors="pt",
    )
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    return inputs["input_ids"][0].tolist(), extra


def plain_ids(subject: VisionSubject, encoded: EncodedPrompt) -> list[int]:
    """probe's token ids with each keyed image id back to the image placeholder token."""
    image = set(ImageTokens.positions(encoded.input_ids))
    return [subject.image_token_id if i in image else t for i, t in enumerate(encoded.input_ids)]


def _margin_from_logp(subject: VisionSubject, scores: list) -> torch.Tensor:
    _, n_refusal = subject.opening_ids(subject.margin_config)
    s = torch.stack(scores)
    return torch.logsumexp(s[:n_refusal], 0) - torch.logsumexp(s[n_refusal:], 0)


def margin_of_ids(subject: VisionSubject, ids: Sequence[int], extra: dict) -> float:
    """The margin of plain token ids shown the image in ``extra`` (one opening per pass)."""
    openings, _ = subject.opening_ids(subject.margin_config)
    scores = []
    for opening in openings:
        row = torch.tensor([[*ids, *opening]])
        with torch.no_grad():
            logp = subject.model(input_ids=row, **extra).logits[0].float().log_softmax(-1)
        scores.append(sum(logp[len(ids) - 1 + i, t] for i, t in enumerate(opening)))
    return float(_margin_from_logp(subject, scores))


def margin_of_embeds(subject: VisionSubject, embeds: torch.Tensor, extra: dict) -> torch.Tensor:
    """Differentiable margins of (batch, length, hidden) input embeddings of plain ids (the
    image placeholders embedded as themselves: the model puts its features there)."""
    openings, _ = subject.opening_ids(subject.margin_config)
    table = subject.model.get_input_embeddings()
    batch, length = embeds.shape[:2]
    many = {k: v.expand(batch, *v.shape[1:]) for k, v in extra.items()}
    scores = []
    for opening in openings:
        tail = table(torch.tensor(opening))[None].expand(batch, -1, -1)
        logits = subject.model(inputs_embeds=torch.cat([embeds, tail], 1), **many).logits
        logp = logits.float().log_softmax(-1)
        scores.append(sum(logp[:, length - 1 + i, t] for i, t in enumerate(opening)))
    _, n_refusal = subject.opening_ids(subject.margin_config)
    s = torch.stack(scores, 1)
    return torch.logsumexp(s[:, :n_refusal], 1) - torch.logsumexp(s[:, n_refusal:], 1)


def word_sums(encoded: EncodedPrompt, token_scores: torch.Tensor) -> np.ndarray:
    """Per-word sums of per-token scores (template and image tokens own no word)."""
    out = np.zeros(len(encoded.words))
    for position, word in enumerate(encoded.token_word):
        if word >= 0:
            out[word] += float(token_scores[position])
    return out


def gradient_x_input(subject: VisionSubject, encoded: EncodedPrompt) -> np.ndarray:
    """Per-word gradient x input by autograd through the model's own pixel path."""
    _, extra = processor_inputs(subject, encoded.query)
    ids = torch.tensor([plain_ids(subject, encoded)])
    embeds = subject.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(margin_of_embeds(subject, embeds, extra).sum(), embeds)
    return word_sums(encoded, (grad * embeds).sum(-1)[0].detach())


def integrated_gradients(
    subject: VisionSubject, encoded: EncodedPrompt, baseline_id: int, steps: int = 64
) -> np.ndarray:
    """Per-word integrated gradients by a midpoint Riemann sum through the pixel path, from
    the prompt tokens all replaced by ``baseline_id`` (template and image unchanged)."""
    _, extra = processor_inputs(subject, encoded.query)
    ids = plain_ids(subject, encoded)
    base = [baseline_id if w >= 0 else t for t, w in zip(ids, encoded.token_word, strict=True)]
    table = subject.model.get_input_embeddings()
    with torch.no_grad():
        x, x0 = table(torch.tensor([ids])), table(torch.tensor([base]))
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    path = (x0 + alphas[:, None, None] * (x - x0)).requires_grad_(True)
    (grad,) = torch.autograd.grad(margin_of_embeds(subject, path, extra).sum(), path)
    return word_sums(encoded, (grad.mean(0) * (x - x0)[0]).sum(-1).detach())
