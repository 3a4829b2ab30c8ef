"""Image-region attribution for VLM subjects, and the text-vs-image reliance share.

The image is cut into a grid of square cells of the *processed* image (by default the vision
tower's patch size, so one cell = one patch). Two methods give a (rows, cols) map per prompt,
sign convention as for words: **positive = pushes toward refusal**.

- ``occlusion``: score(cell) = margin(x) − margin(x with that cell filled with the processor's
  mean colour, i.e. 0 after normalisation). All cells of a prompt are scored in batches: one
  vision-tower pass per batch of occluded images, then one language-model pass (the text fixed).
- ``integrated-gradients``: captum ``IntegratedGradients`` on the pixel values (text fixed),
  from the mean-colour image to the real one; pixel attributions summed over channels (and
  tiles) within each cell. Completeness: the map sums to ≈ margin(x) − margin(mean image).

Reliance share of a prompt: ``T / (T + I)`` with ``T`` = Σ |word score| (the audit's word
attribution, occlusion by default: margin drop per deleted word) and ``I`` = Σ |cell score| of
the occlusion map (margin drop per occluded cell). 1 = the decision moves only with the words,
0 = only with the image. Both sums are totals of single-feature ablation effects on the same
margin, so they are on one scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from probe.attribution.base import WordAttribution
from probe.data import Prompt
from probe.errors import ProbeError

IMAGE_METHODS = ("occlusion", "integrated-gradients")


def _cell_size(subject, patch: int | None) -> int:
    if patch is not None:
        return int(patch)
    vision = getattr(subject.model.config, "vision_config", None)
    return int(getattr(vision, "patch_size", 8) or 8)


def _grid(pixel_values: torch.Tensor, cell: int) -> tuple[int, int]:
    height, width = pixel_values.shape[-2:]
    return -(-height // cell), -(-width // cell)


def _repeat(inputs: dict, n: int) -> dict:
    return {k: v.expand(n, *v.shape[1:]).clone() for k, v in inputs.items()}


def occlusion_map(
    subject, ids: Sequence[int], *, patch: int | None = None, fill: float = 0.0
) -> tuple[np.ndarray, float]:
    """(rows, cols) margin drop per occluded cell, and the unoccluded margin."""
    inputs = subject.pixels_of(ids)
    cell = _cell_size(subject, patch)
    rows, cols = _grid(inputs["pixel_values"], cell)
    batch = _repeat(inputs, rows * cols + 1)  # row 0: the image itself
    for r in range(rows):
        for c in range(cols):
            batch["pixel_values"][
                1 + r * cols + c, ..., r * cell : (r + 1) * cell, c * cell : (c + 1) * cell
            ] = fill
    margins = subject.image_margins(ids, batch)
    return (margins[0] - margins[1:]).reshape(rows, cols), float(margins[0])


def integrated_gradients_map(
    subject, ids: Sequence[int], *, patch: int | None = None, n_steps: int = 16
) -> np.ndarray:
    """(rows, cols) integrated gradients on the pixel values, summed within each cell."""
    from captum.attr import IntegratedGradients

    inputs = subject.pixels_of(ids)
    cell = _cell_size(subject, patch)
    rows, cols = _grid(inputs["pixel_values"], cell)
    pixels = inputs["pixel_values"].to(subject.device, subject.model.dtype)
    others = {k: v for k, v in inputs.items() if k != "pixel_values"}

    def forward(px: torch.Tensor) -> torch.Tensor:
        return subject.pixel_margins(ids, {"pixel_values": px, **_repeat(others, px.shape[0])})

    with torch.enable_grad():
        attr = IntegratedGradients(forward).attribute(
            pixels,
            # mean colour; not exactly 0, which some models (Idefics3) take for a padding image
            baselines=torch.full_like(pixels, 1e-6),
            n_steps=n_steps,
            internal_batch_size=max(1, subject.batch_size),
        )
    per_pixel = attr.detach().float().cpu()
    per_pixel = per_pixel.reshape(-1, *per_pixel.shape[-2:]).sum(0)  # channels, tiles
    height, width = per_pixel.shape
    padded = torch.zeros(rows * cell, cols * cell)
    padded[:height, :width] = per_pixel
    return padded.reshape(rows, cell, cols, cell).sum((1, 3)).double().numpy()


def reliance_share(word_scores: Sequence[float], image_map: np.ndarray) -> float | None:
    """Σ|word scores| / (Σ|word scores| + Σ|cell scores|); None if both are zero."""
    text = float(np.abs(np.asarray(word_scores, dtype=np.float64)).sum())
    image = float(np.abs(np.asarray(image_map, dtype=np.float64)).sum())
    return text / (text + image) if text + image > 0 else None


def _rounded(array: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in np.asarray(array)]


def attribute_images(
    subject,
    prompts: Sequence[Prompt],
    attributions: Sequence[WordAttribution],
    *,
    methods: Sequence[str] = IMAGE_METHODS,
    patch: int | None = None,
    n_steps: int = 16,
    progress: bool = False,
) -> None:
    """Add image maps and the reliance share to each image prompt's attribution ``extra``.

    Fields: ``image`` (absolute path), ``image_map`` (occlusion, else the first method),
    ``image_map_ig`` (integrated gradients), ``text_total``, ``image_total``,
    ``text_reliance``. Text-only prompts are left as they are.
    """
    unknown = [m for m in methods if m not in IMAGE_METHODS]
    if unknown or not methods:
        raise ProbeError(
            f"unknown image attribution method(s) {unknown}; known: {', '.join(IMAGE_METHODS)}"
        )
    by_id = {a.id: a for a in attributions}
    for prompt in tqdm(prompts, desc="image attribution", disable=not progress):
        attribution = by_id.get(prompt.id)
        if attribution is None or prompt.image is None:
            continue
        try:
            ids = subject.encode(prompt.query).input_ids
        except ProbeError as exc:
            raise ProbeError(f"prompt {prompt.id}: {exc}") from None
        extra = attribution.extra
        extra["image"] = str(prompt.image.resolve())
        occlusion = None
        if "occlusion" in methods:
            occlusion, _ = occlusion_map(subject, ids, patch=patch)
            extra["image_map"] = _rounded(occlusion)
        if "integrated-gradients" in methods:
            ig = integrated_gradients_map(subject, ids, patch=patch, n_steps=n_steps)
            extra["image_map_ig"] = _rounded(ig)
            if occlusion is None:
                extra["image_map"] = extra["image_map_ig"]
        cells = occlusion if occlusion is not None else np.asarray(extra["image_map"])
        extra["image_map_method"] = "occlusion" if occlusion is not None else methods[0]
        extra["text_total"] = round(float(np.abs(attribution.scores).sum()), 6)
        extra["image_total"] = round(float(np.abs(cells).sum()), 6)
        share = reliance_share(attribution.scores, cells)
        extra["text_reliance"] = None if share is None else round(share, 6)
