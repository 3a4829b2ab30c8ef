"""Attributor stage: which words of a prompt push the model toward refusal, and how much."""

from probe.attribution import occlusion  # noqa: F401  (registers the method)
from probe.attribution.base import REGISTRY, Attributor, WordAttribution, get_attributor, register

__all__ = ["REGISTRY", "Attributor", "WordAttribution", "get_attributor", "register"]
