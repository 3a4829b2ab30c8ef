"""One-word attack: prove a trigger by flipping the model with a single-word edit.

Built from parts, as TextAttack builds attacks: a goal (``goal.py``), candidate sources
(``transformations.py``), constraints (``constraints.py``), a search strategy (``search.py``) and
typed records (``records.py``); ``recipes/default.py`` composes the default with notes,
``recipes/thorough.py`` the default followed, where it failed, by a wider model-guided search
for real models (``cascade.py`` runs attacks in turn).
Harmful prompts the model refuses are pushed toward compliance (attack success), benign prompts
it answers toward refusal (over-refusal); only judge-verified flips count.
"""

from __future__ import annotations

from probe.attack.constraints import BareTextLM
from probe.attack.oneword import OneWordAttack
from probe.attack.records import AttackRecord, AttackResult
from probe.attack.transformations import Edit
from probe.lexicon.stats import wilson_interval
from probe.lexicon.table import TriggerLexicon

__all__ = [
    "AttackRecord",
    "AttackResult",
    "BareTextLM",
    "Edit",
    "OneWordAttack",
    "write_flip_rates",
]


def write_flip_rates(lexicon: TriggerLexicon, result: AttackResult) -> None:
    """Store each trigger's verified flip rate and Wilson interval in the lexicon entries."""
    for word, (wins, trials) in result.trigger_flip_rates().items():
        entry = lexicon.get(word)
        if entry is None or trials == 0:
            continue
        low, high = wilson_interval(wins, trials)
        entry.flip_rate = wins / trials
        entry.flip_ci_low, entry.flip_ci_high = low, high
        entry.extra["flip_trials"] = trials
