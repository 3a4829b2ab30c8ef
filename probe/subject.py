"""Subject: a Hugging Face chat model behind one small interface.

It formats a prompt with the model's chat template, knows which tokens belong to which word of
the user's prompt (character offsets), scores the decision margin for a batch of token
sequences, and generates greedy responses for verification.
"""

from __future__ import annotations

import copy
import inspect
import warnings
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
        self._branch_embedding_cache: dict[MarginConfig, torch.Tensor] = {}
        self._prefix_sharing_ok: bool | None = None

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

    # ------------------------------------- shared-prefix and differentiable margins
    # Both score every opening as a *branch* of one row: the openings are packed after the
    # scored sequence and a 4-D attention mask lets each opening token see the sequence and its
    # own opening only (see ``_BranchLayout``). One row per sequence instead of one per opening.

    @torch.no_grad()
    def shared_prefix_margins(
        self,
        base: Sequence[int],
        variants: Sequence[Sequence[int]],
        config: MarginConfig | None = None,
    ) -> np.ndarray:
        """Margins of token sequences that are edits of ``base`` (same as ``margins``, faster).

        ``base`` is run once and its KV cache kept; each variant reuses the cached tokens it
        shares with ``base`` (the chat-template prefix and everything before its first edit) and
        runs only the rest, with every opening as a branch. Variants are scored
        ``batch_size`` at a time, so memory is bounded by the batch size. Models whose
        attention ignores custom 4-D masks or explicit positions fail a one-time check against
        ``margins`` and are scored by ``margins`` instead (with a warning).
        """
        config = config or self.margin_config
        if not variants:
            return np.empty(0, dtype=np.float64)
        if not self._prefix_sharing_checked(base, config):
            return self.margins(variants, config)
        openings, n_refusal = self.opening_ids(config)
        shared = [min(_common_prefix(base, v), len(v) - 1) for v in variants]
        order = sorted(range(len(variants)), key=lambda i: -shared[i])
        cache_len = max(shared)
        prefix_cache = self._prefill(base[:cache_len]) if cache_len else None
        out = np.empty(len(variants), dtype=np.float64)
        for begin in range(0, len(order), self.batch_size):
            rows = order[begin : begin + self.batch_size]
            layout = _BranchLayout(
                openings,
                [shared[i] for i in rows],
                [len(variants[i]) - shared[i] for i in rows],
                cache_len,
            )
            ids = torch.full((len(rows), layout.width), self.pad_id, dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, layout.suffix_columns(r)] = torch.tensor(variants[i][shared[i] :])
            ids[:, layout.suffix_width :] = torch.tensor(layout.branch_tokens)
            cache = None
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(rows))
            logp = self._branch_logprobs(layout, cache, input_ids=ids.to(self.device))
            margin = torch.logsumexp(logp[:, :n_refusal], 1) - torch.logsumexp(
                logp[:, n_refusal:], 1
            )
            out[rows] = margin.double().cpu().numpy()
        return out

    def margins_from_embeddings(
        self, embeds: torch.Tensor, config: MarginConfig | None = None
    ) -> torch.Tensor:
        """Differentiable margins of a batch of equal-length input-embedding sequences.

        ``embeds`` is (batch, length, hidden): the chat-formatted sequence as the input
        embedding layer returns it (possibly scaled or interpolated by a gradient method).
        Returns a (batch,) tensor; gradients flow back to ``embeds``.
        """
        config = config or self.margin_config
        openings, n_refusal = self.opening_ids(config)
        batch, length, _ = embeds.shape
        layout = _BranchLayout(openings, [0] * batch, [length] * batch, 0)
        branches = self.opening_embeddings(config).to(embeds.dtype)
        inputs = torch.cat([embeds, branches.expand(batch, -1, -1)], dim=1)
        logp = self._branch_logprobs(layout, None, inputs_embeds=inputs)
        return torch.logsumexp(logp[:, :n_refusal], 1) - torch.logsumexp(logp[:, n_refusal:], 1)

    @torch.no_grad()
    def opening_embeddings(self, config: MarginConfig | None = None) -> torch.Tensor:
        """Input embeddings of the packed opening branches, (1, n, hidden); cached.

        Computed through the model's own input embedding layer (so scaled embeddings stay
        right). Gradient methods that hook that layer call this first, outside the hook.
        """
        config = config or self.margin_config
        if config not in self._branch_embedding_cache:
            openings, _ = self.opening_ids(config)
            tokens = _BranchLayout(openings, [0], [1], 0).branch_tokens
            ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
            self._branch_embedding_cache[config] = self.model.get_input_embeddings()(ids)
        return self._branch_embedding_cache[config]

    def _cache_kwarg(self) -> str:
        """The forward keyword for past key/values (``cache`` in newer transformers)."""
        params = inspect.signature(self.model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def _prefill(self, ids: Sequence[int]):
        """KV cache of one token sequence."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        self.model(
            input_ids=torch.tensor([list(ids)], device=self.device),
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kwarg(): cache},
        )
        return cache

    def _branch_logprobs(self, layout: _BranchLayout, cache, **inputs) -> torch.Tensor:
        """log P(opening | row) for every row of a branch layout, (batch, n_openings)."""
        device = self.device
        dtype = self.model.dtype if self.model.dtype.is_floating_point else torch.float32
        extra = {self._cache_kwarg(): cache, "use_cache": True} if cache is not None else {}
        logits = self.model(
            attention_mask=layout.mask(dtype).to(device),
            position_ids=layout.positions.to(device),
            logits_to_keep=torch.tensor(layout.keep, device=device),
            **inputs,
            **extra,
        ).logits
        logp = logits.float().log_softmax(-1)
        picked = logp[:, torch.tensor(layout.term_keep), torch.tensor(layout.term_token)]
        scores = torch.zeros(logp.shape[0], layout.n_openings, device=logp.device)
        return scores.index_add(1, torch.tensor(layout.term_opening, device=logp.device), picked)

    def _prefix_sharing_checked(self, base: Sequence[int], config: MarginConfig) -> bool:
        """Once per subject: does the shared-prefix path reproduce ``margins`` on ``base``?"""
        if self._prefix_sharing_ok is None:
            self._prefix_sharing_ok = True
            probe_variants = [list(base)]
            if len(base) > 2:
                probe_variants.append(list(base[:-2]) + list(base[-1:]))
            fast = self.shared_prefix_margins(base, probe_variants, config)
            plain = self.margins(probe_variants, config)
            tolerance = 1e-3 if self.model.dtype == torch.float32 else 5e-2
            self._prefix_sharing_ok = bool(
                np.all(np.abs(fast - plain) <= tolerance * (1 + np.abs(plain)))
            )
            if not self._prefix_sharing_ok:
                warnings.warn(
                    f"{self.name or 'model'}: KV-cache prefix sharing does not reproduce the "
                    "plain margin (custom attention masks unsupported?); using the plain path",
                    stacklevel=3,
                )
        return self._prefix_sharing_ok

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


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class _BranchLayout:
    """Rows that share a cached past and score every opening as a branch after a suffix.

    Row r sees the first ``past[r]`` cached tokens, then its ``suffix[r]`` new tokens, which
    are left-padded to a common width so that every row's last suffix token sits in the same
    column. After them come the openings' tokens (all but each opening's last), one branch per
    opening: a branch token sees the cached past, the row's suffix and its own branch only, at
    the positions it would have if that opening alone followed the suffix. So one forward pass
    scores every opening, and the logits needed sit at the same columns in every row.
    """

    def __init__(
        self, openings: list[list[int]], past: list[int], suffix: list[int], cache_len: int
    ) -> None:
        self.n_openings = len(openings)
        self.cache_len = cache_len
        self.suffix_width = max(suffix)
        self.past, self.suffix = past, suffix
        self.branch_tokens: list[int] = []
        self.branch_spans: list[tuple[int, int]] = []
        self.term_keep: list[int] = []
        self.term_token: list[int] = []
        self.term_opening: list[int] = []
        for k, opening in enumerate(openings):
            start = self.suffix_width + len(self.branch_tokens)
            self.branch_spans.append((start, start + len(opening) - 1))
            self.branch_tokens += opening[:-1]
            for t, token in enumerate(opening):
                # logit of token t: the last suffix column (t = 0) or branch column t - 1
                self.term_keep.append(0 if t == 0 else 1 + start - self.suffix_width + t - 1)
                self.term_token.append(token)
                self.term_opening.append(k)
        self.width = self.suffix_width + len(self.branch_tokens)
        self.keep = [self.suffix_width - 1, *range(self.suffix_width, self.width)]

    def suffix_columns(self, row: int) -> slice:
        return slice(self.suffix_width - self.suffix[row], self.suffix_width)

    @property
    def positions(self) -> torch.Tensor:
        positions = torch.zeros((len(self.past), self.width), dtype=torch.long)
        for r, (past, suffix) in enumerate(zip(self.past, self.suffix, strict=True)):
            positions[r, self.suffix_columns(r)] = torch.arange(past, past + suffix)
            for start, end in self.branch_spans:
                positions[r, start:end] = torch.arange(past + suffix, past + suffix + end - start)
        return positions

    def mask(self, dtype: torch.dtype) -> torch.Tensor:
        """Additive (batch, 1, width, cache_len + width) mask: 0 = may attend, min = may not."""
        c, w = self.cache_len, self.width
        allowed = torch.zeros((len(self.past), w, c + w), dtype=torch.bool)
        causal = torch.ones((w, w), dtype=torch.bool).tril()
        for r, past in enumerate(self.past):
            pad = self.suffix_width - self.suffix[r]
            allowed[r, torch.arange(pad), c + torch.arange(pad)] = True  # pads see themselves
            allowed[r, pad:, :past] = True
            allowed[r, pad : self.suffix_width, c + pad : c + self.suffix_width] = causal[
                pad : self.suffix_width, pad : self.suffix_width
            ]
            allowed[r, self.suffix_width :, c + pad : c + self.suffix_width] = True
            for start, end in self.branch_spans:
                allowed[r, start:end, c + start : c + end] = causal[start:end, start:end]
        return torch.zeros(allowed.shape, dtype=dtype).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )[:, None]
