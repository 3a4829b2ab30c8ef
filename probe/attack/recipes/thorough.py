"""A slower one-word attack for real models: the default recipe with a wider model-guided search.

Why (benchmarks/RESULTS.md, "Guided vs exhaustive on the tuned SmolLM2"): on a real model the
words that flip it under the constraints are rarely in the gradient's top 6 (its first-order
estimate ranked them 11th-198th among the words the constraints admit), and the default takes
the top 6 words *before* the constraints, which then reject nearly all of them. Here:

- Gradient-guided words: the first 20 per position that pass content and part of speech
  (of the best 400 by the estimate), so every margin query goes to an admissible edit.
- Budget: 200 margin queries per prompt (the default: 40), 3 generations as before.

Measured on 9 attackable SmolLM2 study queries: 2 of the 4 flips an exhaustive search finds
(default: 0 of 4), with 5% of its queries, 8.0 s per prompt on one CPU core. On the built-in
demo both find every flip exhaustive finds; this one with 38% of exhaustive's queries, the
default with 9%.
"""

from __future__ import annotations

from probe.attack.oneword import OneWordAttack
from probe.attack.recipes.default import DEFAULT

THOROUGH = {**DEFAULT, "guided_admissible": True, "guided_per_position": 20, "max_queries": 200}


def thorough_attack(**overrides) -> OneWordAttack:
    """The thorough recipe, with any parameter overridden."""
    return OneWordAttack(**{**THOROUGH, **overrides})
