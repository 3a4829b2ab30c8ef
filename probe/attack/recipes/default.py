"""probe's default one-word attack, with the reason for each choice.

- Goal: the decision margin ranks candidates; success is only a judge verdict on a greedy
  generation, so a margin that crosses zero is never reported as a flip by itself.
- Edits: substitution, insertion and deletion of one word (word-level edit distance one).
  Insertion is only in front of the lead word: the model's strongest compliance cue is a
  question word in front ("What ..."), which one substitution rarely makes grammatical.
- Sources: the lexicon's top triggers (what the audit claims), WordNet synonyms (natural
  rewordings), and gradient-guided words (HotFlip/AutoPrompt's first-order estimate over real
  one-token English words), so a trigger is compared against the strongest natural edit.
- Constraints, all enforced: content (Morris et al. 2020: edits that change the request are not
  adversarial examples), part of speech (their strongest grammaticality check), and fluency
  under an LM (a calibrated bound instead of human raters; see benchmarks/RESULTS.md).
- Search: positions most decisive first (known opposing triggers, lead word, attribution
  order), one margin batch per position with the shared-prefix KV cache, at most 40 margin
  queries and 3 generations per prompt.
"""

from __future__ import annotations

from probe.attack.oneword import OneWordAttack

DEFAULT = {
    "top_k_triggers": 5,
    "max_queries": 40,
    "max_verify": 3,
    "edit_kinds": ("substitution", "insertion", "deletion"),
    "constraints": ("content", "pos", "fluency"),
    "synonyms": True,
    "guided": True,
    "search": "guided",
    "max_fluency_drop": None,  # calibrated per LM size (constraints.default_max_drop)
}


def default_attack(**overrides) -> OneWordAttack:
    """The default recipe, with any parameter overridden."""
    return OneWordAttack(**{**DEFAULT, **overrides})


def unconstrained_attack(**overrides) -> OneWordAttack:
    """The same search with no constraint enforced (values still recorded): the comparison
    figure that shows how much of an unconstrained success rate rests on unnatural edits."""
    return default_attack(**{"constraints": (), **overrides})
