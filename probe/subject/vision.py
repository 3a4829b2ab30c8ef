"""VisionSubject: a vision-language model (LLaVA family and others) behind the Subject interface.

A VLM is asked a ``Query`` (``probe.query``): prompt text and an image path, one frozen record,
so an edit of the text (``probe.words``) is still a query about the same image. Its token
sequences are lists of ids in which each image placeholder token is replaced by a *keyed image
id* (``ImageTokens``): image ``key``, its ``j``-th feature. Image tokens are never words, so
occlusion, sampling and attack variants copy them unchanged; two sequences share a prefix only if
they show the same image, so KV-cache prefix sharing stays correct. The forward pass embeds text
tokens as usual and puts the image's features (computed by the vision tower + projector, kept in
a bounded LRU cache, ``IMAGE_CACHE_SIZE`` images) at the keyed positions.

The language model then runs on ``inputs_embeds`` exactly as the VLM does after merging its
image features, which is what the tests check against the model's own ``pixel_values`` path.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from probe.data import Prompt
from probe.errors import ProbeError
from probe.query import Query, as_query
from probe.subject.margin import MarginConfig
from probe.subject.text import (
    EncodedPrompt,
    Subject,
    _looks_like_path,
    check_weights_format,
    load_error,
    resolve_device,
    resolve_dtype,
    set_cpu_threads,
    tokenize_chat,
)
from probe.words import align_tokens, split_words

_SENTINEL = "PROBE7f3aSENTINEL"
IMAGE_CACHE_SIZE = 64
"""Images whose features a VisionSubject keeps (least recently used ones are recomputed)."""


class ImageTokens:
    """The keyed-id arithmetic of image tokens in a token sequence, in one place.

    Image ``key``'s ``j``-th feature is the id ``BASE + key * STRIDE + j``: far above any
    vocabulary, so a keyed id is never a text token, and distinct per image.
    """

    BASE = 1 << 40
    STRIDE = 1 << 20

    @classmethod
    def id(cls, key: int, index: int) -> int:
        """The keyed id of image ``key``'s ``index``-th feature."""
        return cls.BASE + key * cls.STRIDE + index

    @classmethod
    def is_image(cls, token: int) -> bool:
        return token >= cls.BASE

    @classmethod
    def positions(cls, ids: Sequence[int]) -> list[int]:
        """Positions of image tokens in a sequence."""
        return [i for i, t in enumerate(ids) if t >= cls.BASE]

    @classmethod
    def key_of(cls, ids: Sequence[int]) -> int | None:
        """The image key a token sequence shows (None: text only)."""
        for t in ids:
            if t >= cls.BASE:
                return (t - cls.BASE) // cls.STRIDE
        return None

    @classmethod
    def rekeyed(cls, ids: Sequence[int], key: int) -> list[int]:
        """The sequence with its image ids pointing at image ``key`` instead."""
        return [cls.id(key, (t - cls.BASE) % cls.STRIDE) if t >= cls.BASE else t for t in ids]

    @classmethod
    def split(cls, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(is-image mask, key, feature index) of a tensor of ids (key/index where masked)."""
        mask = ids >= cls.BASE
        codes = ids[mask] - cls.BASE
        return mask, codes // cls.STRIDE, codes % cls.STRIDE


MAX_IMAGE_PIXELS = 64_000_000  # 8000 x 8000: far above any VLM's input, far below a bomb


def open_image(path: Path, prompt_id: str | None = None):
    """The image as 8-bit RGB; a missing, unreadable or oversized file is a ProbeError.

    The size is checked from the header, before any pixels are decoded, so a small file that
    claims 20000 x 20000 pixels never fills memory. 16-bit greyscale is scaled to 8 bits, not
    clipped (PIL's own conversion turns every value above 255 white).
    """
    from PIL import Image, UnidentifiedImageError

    who = f"prompt {prompt_id}: " if prompt_id else ""
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"{who}image not found: {path}")
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ProbeError(
                    f"{who}image {path} is {width}x{height} pixels, more than probe's limit of "
                    f"{MAX_IMAGE_PIXELS:,}"
                )
            return _to_rgb(opened)
    except Image.DecompressionBombError:  # PIL's own, far larger limit, hit while opening
        raise ProbeError(
            f"{who}image {path} has more pixels than probe's limit of {MAX_IMAGE_PIXELS:,}"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ProbeError(f"{who}cannot read image {path}: {type(exc).__name__}") from None


def _to_rgb(image):
    """8-bit RGB; 16-bit greyscale (PIL modes "I;16*", or "I" holding values above 255) is
    scaled by 65535/255 rather than clipped."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":
        pixels = np.asarray(image, dtype=np.float64)
        deep = image.mode.startswith("I;16") or pixels.max(initial=0) > 255
        scaled = pixels * (255.0 / 65535.0) if deep else pixels
        return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def check_images(prompts: Sequence[Prompt]) -> None:
    """Open every prompt's image now, so a missing or unreadable one fails before any stage."""
    for p in prompts:
        if p.image is not None:
            open_image(p.image, p.id)


def is_vision_model(path: str | Path) -> bool:
    """Does the saved model folder hold a vision-language model (its config has a vision part)?"""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return "vision_config" in data


def load_subject_any(model_id: str | Path, **kwargs) -> Subject:
    """``VisionSubject.load`` for a VLM folder, ``Subject.load`` for anything else."""
    if is_vision_model(model_id):
        return VisionSubject.load(model_id, **kwargs)
    return Subject.load(model_id, **kwargs)


class VisionSubject(Subject):
    """A VLM + its processor, scored by the decision margin; images held fixed per prompt."""

    def __init__(
        self,
        model,
        processor,
        *,
        margin: MarginConfig | None = None,
        chat_template: str | None = None,
        batch_size: int = 16,
        name: str = "",
    ) -> None:
        if chat_template is not None:
            processor.chat_template = chat_template
        template = getattr(processor, "chat_template", None)
        self.processor = processor  # before Subject.__init__, which renders the template
        super().__init__(
            model,
            processor.tokenizer,
            margin=margin,
            chat_template=template,
            batch_size=batch_size,
            name=name,
        )
        config = model.config
        token_id = getattr(config, "image_token_id", None)
        if token_id is None:
            token_id = getattr(config, "image_token_index", None)
        if token_id is None:
            token_id = self.tokenizer.convert_tokens_to_ids(processor.image_token)
        self.image_token_id = int(token_id)
        self.image_cache_size = IMAGE_CACHE_SIZE
        # key -> (features (n_image_tokens, hidden), processor image inputs), least recent first
        self._cache: OrderedDict[int, tuple[torch.Tensor, dict]] = OrderedDict()
        self._keys: dict[str, int] = {}  # resolved image path -> key (never changes)
        self._paths: dict[int, str] = {}  # key -> resolved image path (to recompute evictions)
        self._transient: dict[int, torch.Tensor] = {}  # features scored by one call only
        self._next_key = 0

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
    ) -> VisionSubject:
        """Load a VLM folder or hub id through AutoProcessor + AutoModelForImageTextToText
        (safetensors weights only, unless ``allow_pickle``)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model_id = str(model_id)
        path = Path(model_id)
        if gguf_file:
            raise ProbeError(f"{model_id} is a vision-language model; GGUF loading is text-only")
        if not path.exists() and _looks_like_path(model_id):
            raise ProbeError(f"model folder not found: {model_id}")
        device = resolve_device(device)
        check_weights_format(path, allow_pickle)
        kwargs = {"trust_remote_code": trust_remote_code}
        weights = {} if allow_pickle else {"use_safetensors": True}
        try:
            processor = AutoProcessor.from_pretrained(model_id, **kwargs)
            placement = {"device_map": device_map} if device_map else {}
            model = AutoModelForImageTextToText.from_pretrained(
                model_id, dtype=resolve_dtype(dtype), **kwargs, **weights, **placement
            )
        except Exception as exc:  # a loader boundary: bad files raise many exception types
            raise load_error(model_id, exc) from None
        if not hasattr(processor, "tokenizer"):
            raise ProbeError(f"{model_id}: the processor has no tokenizer")
        try:
            if not device_map:  # with a device map, accelerate has placed the weights
                model.to(device)  # type: ignore[arg-type]  # transformers' stub wraps .to oddly
        except (RuntimeError, AssertionError) as exc:
            raise ProbeError(f"cannot use device {device!r}: {exc}") from None
        set_cpu_threads(model, threads)
        return cls(
            model,
            processor,
            chat_template=chat_template,
            batch_size=batch_size,
            name=model_id,
            margin=margin,
        )

    # ---------------------------------------------------------------- encoding
    def chat_text(self, prompt: Query | str) -> str:
        query = as_query(prompt)
        content: list[dict] = [{"type": "image"}] if query.image is not None else []
        content.append({"type": "text", "text": query.text})
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def _query_start(self, text: str, query: Query) -> int:
        """Where the query's text starts in its chat-formatted ``text`` (see Subject)."""
        rendered = self.chat_text(query.with_text(_SENTINEL))
        at = rendered.find(_SENTINEL)
        if at >= 0 and rendered.count(_SENTINEL) == 1:
            prefix, suffix = rendered[:at], rendered[at + len(_SENTINEL) :]
            if text == prefix + query.text + suffix:
                return len(prefix)
        start = text.rfind(query.text)
        if start < 0:
            raise ProbeError("the chat template rewrites the prompt text; cannot align words")
        return start

    def encode(self, prompt: Query | str) -> EncodedPrompt:
        """Chat-format the query (with its image, if any) and map its tokens to its words.

        The text is tokenized unexpanded (one image placeholder) for word offsets; the processor
        then expands the placeholder into the image's tokens, which become keyed image ids.
        """
        query = as_query(prompt)
        text = self.chat_text(query)
        start = self._query_start(text, query)
        ids, offsets = tokenize_chat(self.tokenizer, text, start, start + len(query.text))
        words = split_words(query.text)
        owner = align_tokens(offsets, words, start)
        if query.image is not None:
            ids, owner = self._expand_image(query.image, ids, owner)
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if limit and len(ids) > limit:
            raise ProbeError(f"prompt is {len(ids)} tokens, longer than the model's {limit}")
        return EncodedPrompt(query, text, tuple(ids), tuple(words), tuple(owner))

    def _expand_image(
        self, image: Path, ids: list[int], owner: list[int]
    ) -> tuple[list[int], list[int]]:
        places = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(places) != 1:
            raise ProbeError(
                f"the chat template renders {len(places)} image placeholders; expected one"
            )
        at = places[0]
        key = self._image_key(image)
        # The processor's expansion of the placeholder depends on the image, not the words: take
        # it from the template rendered around a sentinel, so prompt text never reaches the
        # processor's tokenizer (which would read special-token strings as control tokens).
        rendered = self.chat_text(Query(_SENTINEL, image))
        plain = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        expanded = self.processor(
            text=rendered, images=open_image(image), add_special_tokens=False, return_tensors="pt"
        )["input_ids"][0].tolist()
        slots = [i for i, t in enumerate(plain) if t == self.image_token_id]
        grown = len(expanded) - len(plain)
        if len(slots) != 1 or grown < 0:
            raise ProbeError("the processor changes text around the image; cannot align words")
        start, tail = slots[0], len(plain) - slots[0] - 1
        if expanded[:start] != plain[:start] or (tail and expanded[-tail:] != plain[-tail:]):
            raise ProbeError("the processor changes text around the image; cannot align words")
        segment = expanded[start : start + grown + 1]
        keyed = []
        j = 0
        for token in segment:
            if token == self.image_token_id:
                keyed.append(ImageTokens.id(key, j))
                j += 1
            else:
                keyed.append(token)
        n_features = self.features_of(key).shape[0]
        if j != n_features:
            raise ProbeError(f"image {image}: {j} image tokens but {n_features} features")
        return (
            ids[:at] + keyed + ids[at + 1 :],
            owner[:at] + [-1] * (grown + 1) + owner[at + 1 :],
        )

    # ------------------------------------------------------------ image cache
    def _image_key(self, image: Path) -> int:
        """The key of an image path (the same path always has the same key)."""
        name = str(Path(image).resolve())
        if name not in self._keys:
            key = self._new_key()
            self._keys[name], self._paths[key] = key, name
        return self._keys[name]

    def _new_key(self) -> int:
        key = self._next_key
        self._next_key += 1
        return key

    def _cached(self, key: int) -> tuple[torch.Tensor, dict]:
        """(features, processor inputs) of image ``key``; computed again if evicted."""
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if key not in self._paths:
            raise ProbeError(f"unknown image key {key} (image features were forgotten)")
        inputs = self.image_inputs(open_image(Path(self._paths[key])))
        with torch.no_grad():
            entry = (self.image_features(inputs)[0], inputs)
        self._cache[key] = entry
        while len(self._cache) > max(1, self.image_cache_size):
            self._cache.popitem(last=False)
        return entry

    def features_of(self, key: int) -> torch.Tensor:
        """(n_image_tokens, hidden) features of image ``key``."""
        if key in self._transient:
            return self._transient[key]
        return self._cached(key)[0]

    def pixels_of(self, ids: Sequence[int]) -> dict:
        """The processor's image inputs of the image a token sequence shows."""
        key = ImageTokens.key_of(ids)
        if key is None or key in self._transient:
            raise ProbeError("the prompt has no image")
        return self._cached(key)[1]

    def image_inputs(self, image) -> dict:
        """The processor's image tensors for one PIL image (pixel_values and friends)."""
        processed = self.processor.image_processor(images=image, return_tensors="pt")
        return {k: v for k, v in processed.items() if isinstance(v, torch.Tensor)}

    def image_features(self, inputs: dict) -> torch.Tensor:
        """(batch, n_image_tokens, hidden) features of a batch of images (differentiable).

        ``inputs["pixel_values"]`` holds one image per batch row.
        """
        moved = {k: v.to(self.device) for k, v in inputs.items()}
        if moved["pixel_values"].is_floating_point():
            moved["pixel_values"] = moved["pixel_values"].to(self.model.dtype)
        batch = moved["pixel_values"].shape[0]
        out = self.model.get_image_features(**moved)
        feats = getattr(out, "pooler_output", out)
        if isinstance(feats, list | tuple):
            feats = torch.stack([f.reshape(-1, f.shape[-1]) for f in feats])
        return feats.reshape(batch, -1, feats.shape[-1])

    # ---------------------------------------------------------------- forward
    def embed(self, ids: torch.Tensor, features: dict[int, torch.Tensor] | None = None):
        """Input embeddings of keyed token ids; image ids take their image's features.

        ``features`` overrides (or adds) the features of some keys (e.g. differentiable ones).
        """
        is_image, keys, index = ImageTokens.split(ids)
        plain = torch.where(is_image, torch.full_like(ids, self.image_token_id), ids)
        embeds = self.model.get_input_embeddings()(plain)
        if not bool(is_image.any()):
            return embeds
        values = torch.empty(
            (keys.shape[0], embeds.shape[-1]), dtype=embeds.dtype, device=embeds.device
        )
        pieces = []
        for key in keys.unique().tolist():
            table = (features or {}).get(key)
            if table is None:
                table = self.features_of(key)
            pick = keys == key
            pieces.append((pick, table.to(embeds.dtype)[index[pick]]))
        if any(t.requires_grad for _, t in pieces):
            values = torch.zeros_like(values)
            for pick, rows in pieces:
                values = values.index_put((pick.nonzero()[:, 0],), rows)
        else:
            for pick, rows in pieces:
                values[pick] = rows
        return embeds.masked_scatter(is_image[..., None], values)

    def _forward(self, **inputs):
        ids = inputs.get("input_ids")
        if ids is not None and bool((ids >= ImageTokens.BASE).any()):
            inputs["inputs_embeds"] = self.embed(inputs.pop("input_ids"))
        return self.model(**inputs)

    # -------------------------------------------------------------- generation
    def _greedy(self, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> list[str]:
        """Greedy decoding with a KV cache on keyed ids (left-padded rows)."""
        from transformers import DynamicCache

        eos = self.tokenizer.eos_token_id
        cache = DynamicCache(config=self.model.config.get_text_config())
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        embeds = self.embed(ids)
        out_tokens = []
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            logits = self.model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_kwarg(): cache},
            ).logits[:, -1]
            token = logits.argmax(-1)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            out_tokens.append(token)
            if eos is not None:
                done |= token == eos
            if bool(done.all()):
                break
            embeds = self.model.get_input_embeddings()(token[:, None])
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            positions = positions[:, -1:] + 1
        if not out_tokens:
            return [""] * ids.shape[0]
        generated = torch.stack(out_tokens, 1).tolist()
        texts = []
        for row in generated:
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True))
        return texts

    # ------------------------------------------------------- image-region margins
    @torch.no_grad()
    def image_margins(
        self, ids: Sequence[int], pixel_batch: dict, config: MarginConfig | None = None
    ) -> np.ndarray:
        """Margins of one token sequence shown each image of ``pixel_batch`` (batched)."""
        n = pixel_batch["pixel_values"].shape[0]
        out = np.empty(n, dtype=np.float64)
        for begin in range(0, n, self.batch_size):
            part = {k: v[begin : begin + self.batch_size] for k, v in pixel_batch.items()}
            feats = self.image_features(part)
            keys = []
            try:
                for f in feats:
                    key = self._new_key()
                    self._transient[key] = f
                    keys.append(key)
                out[begin : begin + len(keys)] = self.margins(
                    [ImageTokens.rekeyed(ids, k) for k in keys], config
                )
            finally:
                for key in keys:
                    self._transient.pop(key, None)
        return out

    @torch.no_grad()
    def blank_image_margins(
        self, queries: Sequence[Query], config: MarginConfig | None = None
    ) -> np.ndarray:
        """Margin of each image query with its image swapped for a blank one: the same size,
        every pixel mid-grey (128), so only what the image shows is gone."""
        from PIL import Image

        out = np.empty(len(queries), dtype=np.float64)
        for i, query in enumerate(queries):
            if query.image is None:
                raise ProbeError("a blank-image control needs a query with an image")
            size = open_image(query.image).size
            blank = self.image_inputs(Image.new("RGB", size, (128, 128, 128)))
            out[i] = self.image_margins(self.encode(query).input_ids, blank, config)[0]
        return out

    def pixel_margins(
        self, ids: Sequence[int], pixel_batch: dict, config: MarginConfig | None = None
    ) -> torch.Tensor:
        """Differentiable margins of one sequence shown each image of ``pixel_batch``."""
        feats = self.image_features(pixel_batch)
        base = self._next_key  # keys no stored image uses; given only to this call's features
        rows = [ImageTokens.rekeyed(ids, base + i) for i in range(feats.shape[0])]
        embeds = self.embed(
            torch.tensor(rows, device=self.device),
            {base + i: feats[i] for i in range(feats.shape[0])},
        )
        return self.margins_from_embeddings(embeds, config)
