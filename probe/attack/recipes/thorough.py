"""A one-word attack for real models: the default recipe, then a wider model-guided search on
the prompts it did not flip (``CascadeAttack``).

Why (benchmarks/RESULTS.md, "Guided vs exhaustive on the tuned SmolLM2"): on a real model the
words that flip it under the constraints are rarely in the gradient's top 6, and the default
takes the top 6 words *before* the constraints, which then reject nearly all of them. The
second search:

- Gradient-guided words ranked by the gradient's estimate plus 0.5 x the LM's log-probability
  of the word in its place, so margin queries go to admissible, plausible edits first.
- Width per position: the best 8% of the words that pass content and part of speech there
  (at least 10; the count is estimated from a 40-word sample of the vocabulary). A lead verb
  admits ~800 words, an article ~5: a fixed width of 20 missed a flip ranked 57th of 776.
- Budget: 400 margin queries per prompt (the default: 40), 3 generations as before.

Replayed over every admissible guided candidate of the study's queries, each scored exactly
(benchmarks/candidate_ranking.py): chosen on 108 queries (10/10 of the queries an exhaustive
search of that space flips, 9.1% of its queries), then checked on 91 held-out ones: 19/19
with 8.9% (the former 20 words, 0.1 x prior, 200 queries: 18/19, 8.1%). Run first, the default
keeps the demo's cost: the cascade finds every demo flip exhaustive search finds with 8.4% of
its queries. Run on all 182 study queries it flips every query an exhaustive search of the
space flips (25/25; the former setting 22/25) with 9.6% of its queries, at 11.8 s per
attacked prompt on one CPU core (RESULTS.md, "Width by share of the admitted words" and
"Cascade stages share a memo"). The stages share a memo: the wide search does not re-score
the default's trigger and synonym edits, nor verify again what the default verified.
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
