"""A one-word attack for real models: the default recipe, then a wider model-guided search on
the prompts it did not flip (``CascadeAttack``).

Why (benchmarks/RESULTS.md, "Guided vs exhaustive on the tuned SmolLM2"): on a real model the
words that flip it under the constraints are rarely in the gradient's top 6, and the default
takes the top 6 words *before* the constraints, which then reject nearly all of them. The
second search:

- Gradient-guided words: the first 20 per position that pass content and part of speech (of
  the best 400), ranked by the gradient's estimate plus 0.1 x the LM's log-probability of the
  word in its place, so every margin query goes to an admissible, plausible edit.
- Budget: 200 margin queries per prompt (the default: 40), 3 generations as before.

Replayed over every admissible guided candidate of 108 SmolLM2 study queries, each scored
exactly (benchmarks/candidate_ranking.py), this search reaches 9 of the 10 queries an
exhaustive search of that space flips, with 6.3% of its queries (the estimate alone: 8; its
settings were chosen on the first 42, where it reached all 6). Run first,
the default keeps the demo's cost: the cascade finds every demo flip exhaustive search finds
with 9.8% of its queries (the default alone: 9.0%). On 9 SmolLM2 queries it finds 2 of
exhaustive's 3 flips (the third, "likely" -> "wrong", is not English) with 6.9% of its queries;
on all 182 study queries it costs 9.9 s per attacked prompt on one CPU core.
"""

from __future__ import annotations

from probe.attack.cascade import CascadeAttack
from probe.attack.oneword import OneWordAttack
from probe.attack.recipes.default import DEFAULT

WIDE = {
    **DEFAULT,
    "guided_admissible": True,
    "guided_per_position": 10,
    "guided_share": 0.08,
    "guided_prior_weight": 0.5,
}


def thorough_attack(wide_queries: int = 400, **overrides) -> CascadeAttack:
    """The default recipe, then the wide search (``wide_queries`` margin queries per prompt) on
    what it left; ``overrides`` go to both (``max_queries`` sets the first one's budget)."""
    wide = {**WIDE, **overrides, "max_queries": wide_queries}
    return CascadeAttack([OneWordAttack(**{**DEFAULT, **overrides}), OneWordAttack(**wide)])
