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
from probe.subject.margin import MarginConfig
from probe.subject.packing import PackedLayout, branch_length, common_prefix, pack
from probe.words import Word, align_tokens, split_words

_DTYPES: dict[str, torch.dtype | str] = {
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


SMALL_MODEL_PARAMETERS = 20_000_000


def set_cpu_threads(model, threads: int | None = None) -> None:
    """Set torch's CPU thread count: ``threads`` if given, else 1 for models under 20M
    parameters. Tiny matrix products gain nothing from more threads, and on a busy machine
    extra OpenMP threads spin and wait (the demo audit measured 7.5 s of CPU with one thread
    against 194 s with two while other processes ran)."""
    if threads is None:
        if next(model.parameters()).device.type != "cpu":
            return
        if sum(p.numel() for p in model.parameters()) >= SMALL_MODEL_PARAMETERS:
            return
        threads = 1
    torch.set_num_threads(max(1, threads))


def _looks_like_path(model_id: str) -> bool:
    """A hub id is "name" or "org/name"; anything else (./x, /x, a/b/c, ~) must be a path."""
    return model_id.startswith((".", "/", "~")) or model_id.count("/") > 1 or "\\" in model_id


def resolve_device(name: str) -> str:
    """A device torch can compute on here; "meta", unknown names and absent GPUs are errors."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ProbeError(f"unknown device {name!r}: {exc}") from None
    if device.type == "meta":
        raise ProbeError("device 'meta' holds no weights; use cpu, cuda[:N] or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ProbeError(f"device {name!r}: no CUDA GPU is available here; use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ProbeError(f"device {name!r}: MPS is not available here; use cpu")
    return name


def check_weights_format(path: Path, allow_pickle: bool) -> None:
    """Refuse pickle weights (``*.bin``, ``*.pt``) unless asked: unpickling can run code."""
    if allow_pickle or not path.is_dir():
        return
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(f.name for f in path.iterdir() if f.suffix in (".bin", ".pt", ".pth"))
    if pickles:
        raise ProbeError(
            f"{path} holds pickle weights ({pickles[0]}); probe loads safetensors only, since "
            "unpickling can run code. Pass --allow-pickle for weights you trust"
        )


def load_error(model_id: str, exc: BaseException) -> ProbeError:
    """One line saying why a model could not be loaded (loaders raise many exception types)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return ProbeError(f"cannot load model {model_id!r}: {type(exc).__name__}: {first}".rstrip(": "))


def special_token_strings(tokenizer) -> list[str]:
    """The text forms of a tokenizer's special tokens ("<|im_start|>", "<eos>", "<image>" ...)."""
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(token, "special", False):
            found.add(str(token.content))
    return sorted((t for t in found if t), key=len, reverse=True)


def tokenize_chat(tokenizer, text: str, start: int, end: int) -> tuple[list[int], list]:
    """Token ids and character offsets of chat-formatted ``text``, whose user prompt is
    ``text[start:end]``.

    The template's own special tokens are control tokens; the same strings typed inside the
    user's prompt ("<|assistant|>", "<eos>") are encoded as plain text, so a prompt cannot inject
    a turn and the audit measures the user's words. A prompt without such strings is tokenized
    in one piece, exactly as the model's own chat pipeline does.
    """
    prompt = text[start:end]
    if not any(token in prompt for token in special_token_strings(tokenizer)):
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoding["input_ids"]), list(encoding["offset_mapping"])
    ids: list[int] = []
    offsets: list = []
    for lo, hi, plain in ((0, start, False), (start, end, True), (end, len(text), False)):
        if lo == hi:
            continue
        encoding = tokenizer(
            text[lo:hi],
            add_special_tokens=False,
            return_offsets_mapping=True,
            split_special_tokens=plain,
        )
        ids += encoding["input_ids"]
        offsets += [(a + lo, b + lo) for a, b in encoding["offset_mapping"]]
    return ids, offsets


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
        self._check_chat_template()
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

    def _check_chat_template(self) -> None:
        """Render the chat template once, so a broken one fails now with one clear line."""
        from jinja2 import TemplateError

        try:
            rendered = self.chat_text("Hello")
        except (TemplateError, TypeError, ValueError, KeyError, IndexError) as exc:
            text = str(exc).strip().splitlines()
            raise ProbeError(
                f"the chat template cannot render a user turn: {type(exc).__name__}"
                + (f": {text[0]}" if text else "")
            ) from None
        if not isinstance(rendered, str) or "Hello" not in rendered:
            raise ProbeError("the chat template does not include the user's message")

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
        threads: int | None = None,
        allow_pickle: bool = False,
        device_map: str | None = None,
    ) -> Subject:
        """Load a local folder, a hub id, or a GGUF file through transformers' own loaders.

        ``threads``: CPU threads for torch; None picks 1 for tiny models (see
        ``set_cpu_threads``) and leaves torch's default otherwise. Weights load from
        safetensors (or GGUF) only, unless ``allow_pickle``.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_id = str(model_id)
        path = Path(model_id)
        if gguf_file is None and path.suffix == ".gguf" and path.is_file():
            model_id, gguf_file = str(path.parent), path.name
        elif path.exists() and not path.is_dir():
            raise ProbeError(f"model path {model_id} is a file; pass a folder or a .gguf file")
        elif path.is_dir() and not gguf_file and not (path / "config.json").is_file():
            raise ProbeError(f"{model_id} has no config.json: not a saved Hugging Face model")
        elif not path.exists() and _looks_like_path(model_id):
            raise ProbeError(f"model folder not found: {model_id}")
        device = resolve_device(device)
        kwargs: dict = {"trust_remote_code": trust_remote_code}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        else:
            check_weights_format(path, allow_pickle)
        weights = {} if gguf_file or allow_pickle else {"use_safetensors": True}
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_id, **kwargs)
            placement = {"device_map": device_map} if device_map else {}
            model = AutoModelForCausalLM.from_pretrained(
                model_id, dtype=resolve_dtype(dtype), **kwargs, **weights, **placement
            )
        except Exception as exc:  # a loader boundary: bad files raise many exception types
            raise load_error(model_id, exc) from None
        try:
            if not device_map:  # with a device map, accelerate has placed the weights
                model.to(device)  # type: ignore[arg-type]  # transformers' stub wraps .to oddly
        except (RuntimeError, AssertionError) as exc:
            raise ProbeError(f"cannot use device {device!r}: {exc}") from None
        set_cpu_threads(model, threads)
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
        ids, offsets = tokenize_chat(self.tokenizer, text, start, start + len(prompt))
        words = split_words(prompt)
        owner = align_tokens(offsets, words, start)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and len(ids) > limit:
            raise ProbeError(f"prompt is {len(ids)} tokens, longer than the model's {limit}")
        return EncodedPrompt(prompt, text, tuple(ids), tuple(words), tuple(owner))

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
        row_index: list[int] = []
        positions: list[int] = []
        targets: list[int] = []
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            opening = openings[i % len(openings)]
            first = len(row) - len(opening) - 1  # the logit that predicts the opening's 1st token
            row_index += [i] * len(opening)
            positions += range(first, first + len(opening))
            targets += opening
        logits = self._forward(
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
    # Both pack every opening as a *branch* after the scored tokens: a 4-D attention mask lets
    # each opening token see the sequence and its own opening only, so one forward pass scores
    # all openings (see ``PackedLayout``), and only the logits the margin needs are computed.

    @torch.no_grad()
    def shared_prefix_margins(
        self,
        base: Sequence[int],
        variants: Sequence[Sequence[int]],
        config: MarginConfig | None = None,
        *,
        prefix=None,
    ) -> np.ndarray:
        """Margins of token sequences that are edits of ``base`` (same as ``margins``, faster).

        ``base`` is run once and its KV cache kept; each variant reuses the cached tokens it
        shares with ``base`` (the chat-template prefix and everything before its first edit)
        and runs only the rest. The rests are packed several to a row, without padding between
        them, into rows as long as ``base`` plus the opening branches, ``batch_size`` rows per
        forward pass: memory is bounded like ``batch_size`` full sequences. Models whose
        attention ignores custom 4-D masks or explicit positions fail a one-time check against
        ``margins`` and are scored by ``margins`` instead (with a warning).
        ``prefix``: ``prefill(base)``, kept by a caller that scores many batches of edits of one
        base (the attack: one batch per position), and cut here to what the batch shares.
        """
        config = config or self.margin_config
        if not variants:
            return np.empty(0, dtype=np.float64)
        if not self._prefix_sharing_checked(base, config):
            return self.margins(variants, config)
        openings, n_refusal = self.opening_ids(config)
        shared = [min(common_prefix(base, v), len(v) - 1) for v in variants]
        segments = [(shared[i], len(v) - shared[i]) for i, v in enumerate(variants)]
        cache_len = max(shared)
        prefix_cache = self._prefix_cache(base, cache_len, prefix) if cache_len else None
        packed = pack(segments, len(base), branch_length(openings))
        out = np.empty(len(variants), dtype=np.float64)
        for begin in range(0, len(packed), self.batch_size):
            rows = packed[begin : begin + self.batch_size]
            layout = PackedLayout(openings, [[segments[i] for i in row] for row in rows], cache_len)
            ids = torch.full((len(rows), layout.width), self.pad_id, dtype=torch.long)
            for r, row in enumerate(rows):
                for i, start in zip(row, layout.starts[r], strict=True):
                    tokens = [*variants[i][shared[i] :], *layout.branch_tokens]
                    ids[r, start : start + len(tokens)] = torch.tensor(tokens)
            cache = None
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(rows))
            logp = self._packed_logprobs(layout, cache, input_ids=ids.to(self.device))
            margin = torch.logsumexp(logp[..., :n_refusal], -1) - torch.logsumexp(
                logp[..., n_refusal:], -1
            )
            for r, row in enumerate(rows):
                out[row] = margin[r, : len(row)].double().cpu().numpy()
        return out

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of token ids, as the model's forward pass makes them (a VLM also
        places its image features at keyed image ids)."""
        return self.model.get_input_embeddings()(ids)

    def margins_from_embeddings(
        self, embeds: torch.Tensor, config: MarginConfig | None = None, *, prefix=None
    ) -> torch.Tensor:
        """Differentiable margins of a batch of equal-length input-embedding sequences.

        ``embeds`` is (batch, length, hidden): the chat-formatted sequence as the input
        embedding layer returns it (possibly scaled or interpolated by a gradient method).
        Returns a (batch,) tensor; gradients flow back to ``embeds``. ``prefix``: the KV cache
        (``prefill``, left unchanged) of tokens that come before ``embeds`` and need no
        gradient, so the forward and backward passes run only the rest.
        """
        config = config or self.margin_config
        openings, n_refusal = self.opening_ids(config)
        batch, length, _ = embeds.shape
        past = prefix.get_seq_length() if prefix is not None else 0
        layout = PackedLayout(openings, [[(past, length)]] * batch, past)
        cache = None
        if prefix is not None:
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(batch)
        branches = self.opening_embeddings(config).to(embeds.dtype)
        inputs = torch.cat([embeds, branches.expand(batch, -1, -1)], dim=1)
        logp = self._packed_logprobs(layout, cache, inputs_embeds=inputs)[:, 0]
        return torch.logsumexp(logp[:, :n_refusal], 1) - torch.logsumexp(logp[:, n_refusal:], 1)

    @torch.no_grad()
    def opening_embeddings(self, config: MarginConfig | None = None) -> torch.Tensor:
        """Input embeddings of the opening branches, (1, n, hidden); cached per config.

        Computed through the model's own input embedding layer (so scaled embeddings stay
        right). Gradient methods that hook that layer call this first, outside the hook.
        """
        config = config or self.margin_config
        if config not in self._branch_embedding_cache:
            openings, _ = self.opening_ids(config)
            tokens = [t for opening in openings for t in opening[:-1]]
            ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
            self._branch_embedding_cache[config] = self.model.get_input_embeddings()(ids)
        return self._branch_embedding_cache[config]

    def _forward(self, **inputs):
        """One forward pass of the model (the hook a subject with extra inputs overrides)."""
        return self.model(**inputs)

    def _cache_kwarg(self) -> str:
        """The forward keyword for past key/values (``cache`` in newer transformers)."""
        params = inspect.signature(self.model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def _prefix_cache(self, base: Sequence[int], length: int, prefix):
        """KV cache of ``base[:length]``: a copy of ``prefix`` (the cache of ``base``) cut to
        ``length`` where every layer is a plain full-attention one, else a new prefill."""
        from transformers.cache_utils import DynamicLayer

        if prefix is None or not all(type(layer) is DynamicLayer for layer in prefix.layers):
            return self.prefill(base[:length])
        cache = copy.deepcopy(prefix)
        cache.crop(length - len(base))
        return cache

    @torch.no_grad()
    def prefill(self, ids: Sequence[int]):
        """KV cache of one token sequence."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        self._forward(
            input_ids=torch.tensor([list(ids)], device=self.device),
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kwarg(): cache},
        )
        return cache

    def _packed_logprobs(self, layout: PackedLayout, cache, **inputs) -> torch.Tensor:
        """log P(opening | segment) for a packed layout, (rows, max segments, n_openings)."""
        device = self.device
        dtype = self.model.dtype if self.model.dtype.is_floating_point else torch.float32
        extra = {self._cache_kwarg(): cache, "use_cache": True} if cache is not None else {}
        logits = self._forward(
            attention_mask=layout.mask(dtype).to(device),
            position_ids=layout.positions.to(device),
            logits_to_keep=layout.keep.to(device),
            **inputs,
            **extra,
        ).logits.float()
        rows, segments = layout.keep.shape[0], layout.max_segments
        logits = logits.view(rows, segments, -1, logits.shape[-1])
        keep = torch.tensor(layout.term_keep, device=logits.device)
        token = torch.tensor(layout.term_token, device=logits.device)
        picked = logits[:, :, keep, token] - torch.logsumexp(logits, -1)[:, :, keep]
        scores = torch.zeros(rows, segments, layout.n_openings, device=logits.device)
        return scores.index_add(2, torch.tensor(layout.term_opening, device=logits.device), picked)

    def _prefix_sharing_checked(self, base: Sequence[int], config: MarginConfig) -> bool:
        """Once per subject: does the shared-prefix path reproduce ``margins`` on ``base``?"""
        if self._prefix_sharing_ok is None:
            self._prefix_sharing_ok = True
            probe_variants = [list(base)]
            if len(base) > 2:
                probe_variants.append(list(base[:-2]) + list(base[-1:]))
            plain = self.margins(probe_variants, config)
            try:
                fast = self.shared_prefix_margins(base, probe_variants, config)
            except (TypeError, ValueError, RuntimeError, IndexError):
                fast = np.full_like(plain, np.nan)
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
            responses += self._greedy(ids.to(self.device), mask.to(self.device), max_new_tokens)
        return [r.strip() for r in responses]

    def _greedy(self, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> list[str]:
        """Decoded greedy continuations of left-padded rows (a VLM overrides this)."""
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.pad_id,
        )
        return self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
