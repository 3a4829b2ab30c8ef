"""``CascadeAttack``: attacks run in turn, each on the prompts the ones before it did not flip.

A cheap search for every prompt and a wider one only where it failed: the wide search's cost
is paid on the prompts that need it (a real model's), not on those a few queries flip (the
demo's). The result reads as one attack's: every verified edit, queries summed per prompt.
The stages share one ``SearchMemo``: an edit an earlier stage scored or verified is not
queried again (the wide search's plan holds the default's trigger and synonym edits).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from probe.attack.oneword import OneWordAttack
from probe.attack.records import AttackResult
from probe.attack.search import SearchMemo
from probe.attribution.base import WordAttribution
from probe.data import Prompt
from probe.judge import RefusalJudge
from probe.lexicon.table import TriggerLexicon
from probe.subject.text import Subject


class CascadeAttack:
    """Run ``attacks`` in order; each after the first sees only the attacked prompts that are
    still unflipped. Same ``run`` as ``OneWordAttack``."""

    def __init__(self, attacks: Sequence[OneWordAttack]) -> None:
        self.attacks = list(attacks)

    def run(
        self,
        subject: Subject,
        judge: RefusalJudge,
        lexicon: TriggerLexicon,
        prompts: Sequence[Prompt],
        attributions: Sequence[WordAttribution],
        refused: dict[str, bool],
        *,
        memo: SearchMemo | None = None,
        progress: bool = False,
    ) -> AttackResult:
        result = AttackResult([], {}, set(), 0)
        memo = SearchMemo() if memo is None else memo
        todo = list(prompts)
        for step, attack in enumerate(self.attacks):
            if step:
                todo = [
                    p for p in todo if p.id in result.attacked and p.id not in result.flipped_ids
                ]
            if not todo:
                break
            part = attack.run(
                subject, judge, lexicon, todo, attributions, refused, memo=memo, progress=progress
            )
            spent = result.queries_by_prompt
            result.records += [  # a record's query count covers the earlier attacks' queries
                dataclasses.replace(r, queries=r.queries + spent.get(r.id, 0)) for r in part.records
            ]
            result.attacked.update(part.attacked)
            result.flipped_ids |= part.flipped_ids
            result.queries += part.queries
            for prompt_id, queries in part.queries_by_prompt.items():
                spent[prompt_id] = spent.get(prompt_id, 0) + queries
            result.notes = sorted(set(result.notes) | set(part.notes))
            result.fluency_evaluations += part.fluency_evaluations
        return result
