"""Occlusion: score_i = margin(x) − margin(x with word i taken away), one word at a time.

Three ways to take a word away, one class each:

- ``occlusion``: delete the word's tokens from the chat-formatted token sequence (template and
  every other token stay identical);
- ``occlusion-baseline``: replace each of the word's tokens by a baseline token (positions
  stay put; the default baseline is the unknown token, else padding);
- ``leave-one-out``: delete the word from the prompt *text* and re-encode it, which is what a
  one-word edit really does (a sub-word tokenizer may split the neighbours differently); the
  edited query keeps its image.

All variants of a prompt are edits of its token sequence, so they are scored with
``Subject.shared_prefix_margins``: the prompt runs once, and each variant reuses the KV cache of
everything before the word it removes (the chat-template prefix included), in batches.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

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
from probe.subject.text import EncodedPrompt, Subject
from probe.words import delete_word


class _OneWordOcclusion(Attributor):
    """Scores each word by the margin drop when that word alone is taken away."""

    @abstractmethod
    def variants(self, subject: Subject, encoded: EncodedPrompt) -> dict[int, list[int]]:
        """Word index -> the token sequence without that word (words absent: score 0)."""

    def attribute(
        self, subject: Subject, prompts: Sequence[Prompt], *, progress: bool = False
    ) -> list[WordAttribution]:
        results = []
        encoded = encode_prompts(subject, prompts)
        for prompt, enc in tqdm(
            list(zip(prompts, encoded, strict=True)), desc=self.name, disable=not progress
        ):
            variants = self.variants(subject, enc)
            margins = subject.shared_prefix_margins(
                enc.input_ids, [list(enc.input_ids), *variants.values()]
            )
            base = margins[0]
            scores = [0.0] * len(enc.words)
            for index, margin in zip(variants, margins[1:], strict=True):
                scores[index] = base - margin
            results.append(make_attribution(prompt, enc, scores, base, self.name))
        return results


@register
class Occlusion(_OneWordOcclusion):
    """Leave-one-word-out by deleting the word's tokens from the token sequence."""

    name = "occlusion"

    def variants(self, subject: Subject, encoded: EncodedPrompt) -> dict[int, list[int]]:
        perturber = WordPerturber(encoded)
        return {i: perturber.apply({i}) for i in perturber.features}


@register
class BaselineOcclusion(_OneWordOcclusion):
    """Occlusion by replacing each token of the word with a baseline token."""

    name = "occlusion-baseline"

    def __init__(self, baseline_token: str | None = None) -> None:
        self.baseline_token = baseline_token

    def variants(self, subject: Subject, encoded: EncodedPrompt) -> dict[int, list[int]]:
        perturber = WordPerturber(encoded, baseline_token_id(subject, self.baseline_token))
        return {i: perturber.apply({i}) for i in perturber.features}


@register
class LeaveOneOut(_OneWordOcclusion):
    """Leave-one-out on the text: delete the word (and a space) and re-encode the prompt."""

    name = "leave-one-out"

    def variants(self, subject: Subject, encoded: EncodedPrompt) -> dict[int, list[int]]:
        return {
            i: list(subject.encode(delete_word(encoded.query, word)).input_ids)
            for i, word in enumerate(encoded.words)
        }
