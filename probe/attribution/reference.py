"""Reference adapter: captum's ``LLMAttribution(FeatureAblation)`` on the same word occlusion.

For comparison and benchmarking only: captum scores one target string per run, one perturbed
input at a time (batch size 1), so the margin's contrast takes one run per opening. The
adapter hands captum a word-level ``InterpretableInput`` whose perturbation is exactly probe's
``occlusion`` (a word's tokens deleted from the chat-formatted sequence, template untouched),
runs it once per opening, and rebuilds the margin drop from captum's per-opening log-probability
drops: log P(o | x without w) = log P(o | x) − captum's score. With one refusal and one
compliance opening this is the two-run contrast (refusal score minus compliance score).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from probe.attribution.base import (
    Attributor,
    WordAttribution,
    WordPerturber,
    encode_prompts,
    make_attribution,
    register,
)
from probe.data import Prompt
from probe.subject.margin import margin_from_logprobs
from probe.subject.text import Subject


@register
class CaptumAblation(Attributor):
    """Word occlusion computed by captum ``LLMAttribution(FeatureAblation)``, one run per opening.

    ``forward_in_tokens`` is captum's own switch: False scores the whole target in one pass;
    True re-runs the model once per target token. Captum's KV-cached token loop
    (``use_cached_outputs``, its default) is never used: with transformers 5 (the ``cache``
    keyword) it scores multi-token targets wrongly (checked against the one-pass result).
    """

    name = "captum-ablation"
    no_images_because = (
        "captum runs the model on plain token ids, which cannot carry a VLM's image features; "
        "use occlusion (the same word deletion, scored with the image)"
    )

    def __init__(self, forward_in_tokens: bool = False) -> None:
        self.forward_in_tokens = forward_in_tokens

    def attribute(
        self, subject: Subject, prompts: Sequence[Prompt], *, progress: bool = False
    ) -> list[WordAttribution]:
        from captum.attr import FeatureAblation, LLMAttribution

        from probe.attribution.captum_input import WordDeletionInput

        self.check_images(prompts)
        openings, n_refusal = subject.opening_ids(subject.margin_config)
        llm = LLMAttribution(FeatureAblation(subject.model), subject.tokenizer)
        results = []
        encoded = encode_prompts(subject, prompts)
        for prompt, enc in tqdm(
            list(zip(prompts, encoded, strict=True)), desc=self.name, disable=not progress
        ):
            perturber = WordPerturber(enc)
            inp = WordDeletionInput(perturber, subject.device)
            drops = np.stack(
                [
                    llm.attribute(
                        inp,
                        target=torch.tensor(opening),
                        forward_in_tokens=self.forward_in_tokens,
                        use_cached_outputs=False,
                    )
                    .seq_attr.double()
                    .cpu()
                    .numpy()
                    for opening in openings
                ],
                axis=1,
            )  # (words, openings): log P(o | x) - log P(o | x without word)
            with torch.no_grad():
                full = subject._opening_logprobs([enc.input_ids], openings)[0]
            logp = np.vstack([full.double().cpu().numpy(), full.double().cpu().numpy() - drops])
            margins = margin_from_logprobs(torch.from_numpy(logp), n_refusal).numpy()
            scores = [0.0] * len(enc.words)
            for word, margin in zip(perturber.features, margins[1:], strict=True):
                scores[word] = float(margins[0] - margin)
            results.append(make_attribution(prompt, enc, scores, margins[0], self.name))
        return results
