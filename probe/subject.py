"""Subject: a Hugging Face chat model behind one small interface.

It formats a prompt with the model's chat template, knows which tokens belong to which word of
the user's prompt (character offsets), scores the decision margin for a batch of token
sequences, and generates greedy responses for verification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from probe.errors import ProbeError
from probe.margin import MarginConfig
from probe.words import Word, align_tokens, split_words

_DTYPES = {
    "auto": "auto",
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


@dataclass(frozen=True)
class EncodedPrompt:
    """A chat-formatted prompt: token ids, the prompt's words, and each token's word (-1: none)."""

    prompt: str
    text: str
    input_ids: tuple[int, ...]
    words: tuple[Word, ...]
    token_word: tuple[int, ...]

    def without_words(self, drop: set[int]) -> list[int]:
        """Token ids with every token of the given word indices removed (for occlusion)."""
        return [t for t, w in zip(self.input_ids, self.token_word, strict=True) if w not in drop]

    def word_token_positions(self, index: int) -> list[int]:
        return [i for i, w in enumerate(self.token_word) if w == index]


def resolve_dtype(name: str) -> torch.dtype | str:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ProbeError(f"unknown dtype {name!r}; use one of {', '.join(_DTYPES)}") from None


class Subject:
    """A causal LM + tokenizer with a chat template, scored by the decision margin."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        margin: MarginConfig | None = None,
        chat_template: str | None = None,
        batch_size: int = 16,
        name: str = "",
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ProbeError("probe needs a fast tokenizer (character offsets) for word alignment")
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        if not getattr(tokenizer, "chat_template", None):
            raise ProbeError(
                f"model {name or ''} has no chat template; pass --chat-template FILE (a Jinja file)"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.margin_config = margin or MarginConfig.default()
        self.batch_size = max(1, batch_size)
        self.name = name
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self._opening_cache: dict[MarginConfig, tuple[list[list[int]], int]] = {}

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        model_id: str | Path,
        *,
        gguf_file: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        chat_template: str | None = None,
        trust_remote_code: bool = False,
        batch_size: int = 16,
        margin: MarginConfig | None = None,
    ) -> Subject:
        """Load a local folder, a hub id, or a GGUF file through transformers' own loaders."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_id = str(model_id)
        path = Path(model_id)
        if gguf_file is None and path.suffix == ".gguf" and path.is_file():
            model_id, gguf_file = str(path.parent), path.name
        elif path.exists() and not path.is_dir():
            raise ProbeError(f"model path {model_id} is a file; pass a folder or a .gguf file")
        kwargs = {"trust_remote_code": trust_remote_code}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_id, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                model_id, dtype=resolve_dtype(dtype), **kwargs
            )
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ProbeError(f"cannot load model {model_id!r}: {first}") from None
        try:
            model.to(device)
        except (RuntimeError, AssertionError) as exc:
            raise ProbeError(f"cannot use device {device!r}: {exc}") from None
        return cls(
            model,
            tokenizer,
            chat_template=chat_template,
            batch_size=batch_size,
            name=model_id if not gguf_file else f"{model_id}/{gguf_file}",
            margin=margin,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---------------------------------------------------------------- encoding
    def chat_text(self, prompt: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )

    def _prompt_start(self, text: str, prompt: str) -> int:
        """Where the user's prompt starts in its chat-formatted ``text``.

        The template is rendered once with a sentinel in place of the prompt: the prompt starts
        where the sentinel does, as long as the template copies the prompt verbatim. (Searching
        for the prompt text itself would find template text, e.g. the prompt "assistant" in
        "<|im_start|>assistant".)
        """
        sentinel = "PROBE7f3aSENTINEL"
        rendered = self.chat_text(sentinel)
        at = rendered.find(sentinel)
        if at >= 0 and rendered.count(sentinel) == 1:
            prefix, suffix = rendered[:at], rendered[at + len(sentinel) :]
            if text == prefix + prompt + suffix:
                return len(prefix)
        start = text.rfind(prompt)
        if start < 0:
            raise ProbeError("the chat template rewrites the prompt text; cannot align words")
        return start

    def encode(self, prompt: str) -> EncodedPrompt:
        """Chat-format ``prompt`` and map its tokens to the prompt's words."""
        text = self.chat_text(prompt)
        start = self._prompt_start(text, prompt)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        words = split_words(prompt)
        owner = align_tokens(encoding["offset_mapping"], words, start)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and len(encoding["input_ids"]) > limit:
            raise ProbeError(
                f"prompt is {len(encoding['input_ids'])} tokens, longer than the model's {limit}"
            )
        return EncodedPrompt(prompt, text, tuple(encoding["input_ids"]), tuple(words), tuple(owner))

    def opening_ids(self, config: MarginConfig) -> tuple[list[list[int]], int]:
        """Token ids of each opening (refusal ones first) and how many are refusal openings."""
        if config not in self._opening_cache:
            ids = [
                self.tokenizer(o, add_special_tokens=False)["input_ids"]
                for o in (*config.refusal, *config.compliance)
            ]
            if any(len(i) == 0 for i in ids):
                raise ProbeError("an opening tokenizes to nothing; check the margin openings")
            self._opening_cache[config] = (ids, len(config.refusal))
        return self._opening_cache[config]

    # ------------------------------------------------------------------ margin
    @torch.no_grad()
    def margins(
        self,
        sequences: Sequence[Sequence[int]],
        config: MarginConfig | None = None,
        *,
        progress: bool = False,
        desc: str = "margin",
    ) -> np.ndarray:
        """Decision margin of each token sequence (already chat-formatted), batched."""
        config = config or self.margin_config
        openings, n_refusal = self.opening_ids(config)
        out = np.empty(len(sequences), dtype=np.float64)
        step = max(1, self.batch_size)
        starts = range(0, len(sequences), step)
        for begin in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
            chunk = sequences[begin : begin + step]
            logp = self._opening_logprobs(chunk, openings)
            out[begin : begin + len(chunk)] = (
                (
                    torch.logsumexp(logp[:, :n_refusal], dim=1)
                    - torch.logsumexp(logp[:, n_refusal:], dim=1)
                )
                .double()
                .cpu()
                .numpy()
            )
        return out

    def prompt_margins(
        self, prompts: Sequence[str], config: MarginConfig | None = None
    ) -> np.ndarray:
        return self.margins([self.encode(p).input_ids for p in prompts], config)

    def _opening_logprobs(
        self, sequences: Sequence[Sequence[int]], openings: list[list[int]]
    ) -> torch.Tensor:
        """log P(opening | sequence) for every pair, as a (len(sequences), len(openings)) tensor.

        Each pair is one right-padded row: pads come after every scored position, so under a
        causal mask they cannot change the scored logits (batched == one at a time).
        """
        rows = [list(seq) + opening for seq in sequences for opening in openings]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        row_index, positions, targets = [], [], []
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            opening = openings[i % len(openings)]
            first = len(row) - len(opening) - 1  # the logit that predicts the opening's 1st token
            row_index += [i] * len(opening)
            positions += range(first, first + len(opening))
            targets += opening
        logits = self.model(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
        ).logits
        row_t = torch.tensor(row_index, device=logits.device)
        picked = logits[row_t, torch.tensor(positions, device=logits.device)].float()
        token_logp = picked.log_softmax(-1).gather(
            1, torch.tensor(targets, device=logits.device)[:, None]
        )[:, 0]
        scores = torch.zeros(len(rows), device=logits.device).index_add_(0, row_t, token_logp)
        return scores.view(len(sequences), len(openings))

    # -------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy responses, batched with left padding."""
        responses: list[str] = []
        for begin in range(0, len(prompts), self.batch_size):
            chunk = [self.encode(p).input_ids for p in prompts[begin : begin + self.batch_size]]
            width = max(len(c) for c in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, row in enumerate(chunk):
                ids[i, width - len(row) :] = torch.tensor(row)
                mask[i, width - len(row) :] = 1
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.pad_id,
            )
            responses += self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        return [r.strip() for r in responses]
