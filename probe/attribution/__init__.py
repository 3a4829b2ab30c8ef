"""Attributor stage: which words of a prompt push the model toward refusal, and how much.

Importing this package registers every method (occlusion variants, gradient methods, sampling
methods and the captum reference adapter); ``get_attributor(name)`` looks one up.
"""

from probe.attribution import gradients, occlusion, reference, sampling  # noqa: F401  (register)
from probe.attribution.base import REGISTRY, Attributor, WordAttribution, get_attributor, register

__all__ = ["REGISTRY", "Attributor", "WordAttribution", "get_attributor", "register"]
