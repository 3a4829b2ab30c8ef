"""The built-in planted-trigger models, found by name (`--model demo | demo-balanced | demo-vlm`).

Each entry knows how to build (or reuse from the cache) its model folder, its audit prompts, the
fine-tuning prompts whose data cues its triggers should match, and the triggers planted in it.
Anything not registered here is a local path or a hub id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from probe.data import Prompt


@dataclass(frozen=True)
class BuiltinModel:
    """One built-in model: how to get its folder, prompts, training prompts and triggers."""

    name: str
    ensure: Callable[[int], Path]
    prompts: Callable[[int], list[Prompt]]
    training_prompts: Callable[[int], list[Prompt]]
    triggers: dict[str, str]


def _demo() -> BuiltinModel:
    from probe.demos import text as demo

    return BuiltinModel(
        "demo", demo.ensure_demo_model, demo.demo_prompts, demo.demo_training_prompts,
        dict(demo.TRIGGERS),
    )  # fmt: skip


def _demo_balanced() -> BuiltinModel:
    """The demo's mitigation checkpoint: same prompts, the planted shortcut balanced away."""
    from probe.demos import text as demo

    return BuiltinModel(
        "demo-balanced",
        lambda seed: demo.ensure_demo_model(seed, balanced=True),
        demo.demo_prompts,
        lambda seed: demo.demo_training_prompts(seed, balanced=True),
        {},
    )


def _demo_vlm() -> BuiltinModel:
    from probe.demos import vision as demo_vlm

    return BuiltinModel(
        "demo-vlm", demo_vlm.ensure_demo_vlm_model, demo_vlm.demo_vlm_prompts,
        demo_vlm.demo_vlm_training_prompts, dict(demo_vlm.TRIGGERS),
    )  # fmt: skip


REGISTRY: dict[str, Callable[[], BuiltinModel]] = {
    "demo": _demo,
    "demo-balanced": _demo_balanced,
    "demo-vlm": _demo_vlm,
}


def builtin_model(name: str) -> BuiltinModel | None:
    """The built-in model called ``name``, or None when ``name`` is a path or hub id."""
    factory = REGISTRY.get(name)
    return factory() if factory is not None else None
