"""Word occlusion (leave-one-word-out): score_i = margin(x) − margin(x without word i).

All variants of all prompts are scored in batches. A word is removed by dropping its tokens
from the chat-formatted token sequence, so the template and every other token stay identical.
"""

from __future__ import annotations

from collections.abc import Sequence

from probe.attribution.base import Attributor, WordAttribution, register
from probe.data import Prompt
from probe.subject import Subject


@register
class Occlusion(Attributor):
    """Leave-one-word-out occlusion of the decision margin, batched across prompts."""

    name = "occlusion"

    def attribute(
        self, subject: Subject, prompts: Sequence[Prompt], *, progress: bool = False
    ) -> list[WordAttribution]:
        encoded = [subject.encode(p.prompt) for p in prompts]
        sequences: list[list[int]] = []
        layout: list[tuple[int, list[int | None]]] = []
        for enc in encoded:
            full = len(sequences)
            sequences.append(list(enc.input_ids))
            slots: list[int | None] = []
            present = set(enc.token_word)
            for index in range(len(enc.words)):
                if index in present:
                    slots.append(len(sequences))
                    sequences.append(enc.without_words({index}))
                else:
                    slots.append(None)
            layout.append((full, slots))
        margins = subject.margins(sequences, progress=progress, desc="occlusion")
        results = []
        for prompt, enc, (full, slots) in zip(prompts, encoded, layout, strict=True):
            base = margins[full]
            scores = [0.0 if s is None else float(base - margins[s]) for s in slots]
            results.append(
                WordAttribution(
                    id=prompt.id,
                    prompt=prompt.prompt,
                    label=prompt.label,
                    words=[w.text for w in enc.words],
                    spans=[(w.start, w.end) for w in enc.words],
                    scores=scores,
                    margin=float(base),
                    method=self.name,
                )
            )
        return results
