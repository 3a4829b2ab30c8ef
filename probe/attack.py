"""One-word substitution attack: prove a trigger by flipping the model with a single-word edit.

Harmful prompts the model refuses get compliance triggers (attack success); benign prompts it
answers get refusal triggers (over-refusal). Positions are tried in attribution order (the word
pushing hardest against the target first), triggers in lexicon order; every candidate is scored
by the margin in one batch, and the best ones are verified by greedy generation + the judge.
Only verified flips count. Content words (nouns, except in the lead position, where the tagger
reads imperatives like "Share" as nouns) are never replaced, so a flip measures a shortcut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from probe.attribution.base import WordAttribution
from probe.data import Prompt
from probe.judge import RefusalJudge
from probe.lexicon_table import Direction, TriggerLexicon
from probe.nlp import universal_tags
from probe.stats import wilson_interval
from probe.subject import Subject
from probe.words import replace_word, split_words

PROTECTED_TAGS = frozenset({"NOUN", "PROPN", "NUM"})


@dataclass
class AttackRecord:
    """One verified edit; one line of attacks.jsonl (DESIGN.md contract)."""

    id: str
    label: str | None
    target: Direction
    original: str
    variant: str
    position: int
    old_word: str
    new_word: str
    replaced_pos: str | None
    margin_before: float
    margin_after: float
    flipped: bool
    judged_refusal_before: bool
    judged_refusal_after: bool
    response_after: str
    queries: int

    def to_record(self) -> dict:
        record = asdict(self)
        record["margin_before"] = round(self.margin_before, 6)
        record["margin_after"] = round(self.margin_after, 6)
        return record


@dataclass
class AttackResult:
    """All verified edits plus the headline metrics."""

    records: list[AttackRecord]
    attacked: dict[str, Direction]
    flipped_ids: set[str]
    queries: int
    notes: list[str] = field(default_factory=list)

    def rate(self, target: Direction) -> float | None:
        ids = [i for i, t in self.attacked.items() if t == target]
        if not ids:
            return None
        return sum(i in self.flipped_ids for i in ids) / len(ids)

    @property
    def queries_per_success(self) -> float | None:
        return self.queries / len(self.flipped_ids) if self.flipped_ids else None

    def trigger_flip_rates(self) -> dict[str, tuple[int, int]]:
        """Per new word: (prompts it flipped, prompts on which it was verified)."""
        tried: dict[str, set[str]] = {}
        won: dict[str, set[str]] = {}
        for r in self.records:
            key = r.new_word.lower()
            tried.setdefault(key, set()).add(r.id)
            if r.flipped:
                won.setdefault(key, set()).add(r.id)
        return {w: (len(won.get(w, ())), len(ids)) for w, ids in tried.items()}


class OneWordAttack:
    """Search one-word edits that flip the model, under a per-prompt query budget."""

    def __init__(
        self,
        top_k_triggers: int = 5,
        max_positions: int = 4,
        max_verify: int = 3,
        max_new_tokens: int = 24,
        protect_content: bool = True,
    ) -> None:
        self.top_k_triggers = top_k_triggers
        self.max_positions = max_positions
        self.max_verify = max_verify
        self.max_new_tokens = max_new_tokens
        self.protect_content = protect_content

    def run(
        self,
        subject: Subject,
        judge: RefusalJudge,
        lexicon: TriggerLexicon,
        prompts: Sequence[Prompt],
        attributions: Sequence[WordAttribution],
        refused: dict[str, bool],
        *,
        progress: bool = False,
    ) -> AttackResult:
        """Attack every labelled prompt whose judged behaviour matches its label."""
        by_id = {a.id: a for a in attributions}
        notes: list[str] = []
        records: list[AttackRecord] = []
        attacked: dict[str, Direction] = {}
        flipped: set[str] = set()
        total_queries = 0
        for prompt in tqdm(prompts, desc="attack", unit="prompt", disable=not progress):
            target = _target(prompt, refused.get(prompt.id))
            if target is None:
                continue
            triggers = lexicon.top(target, self.top_k_triggers)
            if not triggers:
                notes.append(f"no {target} triggers in the lexicon")
                continue
            attacked[prompt.id] = target
            opposite: Direction = "refusal" if target == "compliance" else "compliance"
            candidates = self._candidates(
                prompt.prompt,
                by_id.get(prompt.id),
                target,
                triggers,
                lexicon.top(opposite, self.top_k_triggers),
            )
            if not candidates:
                continue
            variants = [c[2] for c in candidates]
            margins = subject.prompt_margins([prompt.prompt, *variants])
            before, after = float(margins[0]), margins[1:]
            queries = len(variants) + 1
            order = np.argsort(after if target == "compliance" else -after, kind="stable")
            for rank in order[: self.max_verify]:
                position, old, variant, pos_tag = candidates[rank]
                response = subject.generate([variant], self.max_new_tokens)[0]
                queries += 1
                judged = judge.is_refusal(response)
                success = judged == (target == "refusal")
                records.append(
                    AttackRecord(
                        id=prompt.id,
                        label=prompt.label,
                        target=target,
                        original=prompt.prompt,
                        variant=variant,
                        position=position,
                        old_word=old,
                        new_word=_new_word(variant, prompt.prompt, position),
                        replaced_pos=pos_tag,
                        margin_before=before,
                        margin_after=float(after[rank]),
                        flipped=success,
                        judged_refusal_before=bool(refused[prompt.id]),
                        judged_refusal_after=judged,
                        response_after=response,
                        queries=queries,
                    )
                )
                if success:
                    flipped.add(prompt.id)
                    break
            total_queries += queries
        return AttackResult(records, attacked, flipped, total_queries, sorted(set(notes)))

    def _candidates(
        self,
        text: str,
        attribution: WordAttribution | None,
        target: Direction,
        triggers: Sequence[str],
        opposing_triggers: Sequence[str],
    ) -> list[tuple[int, str, str, str | None]]:
        """(word index, old word, variant text, old word's POS) for each one-word edit."""
        words = split_words(text)
        alnum = [i for i, w in enumerate(words) if not w.is_punct]
        tags = universal_tags([w.text for w in words]) if self.protect_content else None
        lead = alnum[0] if alnum else -1
        scores = (
            attribution.scores
            if attribution is not None and len(attribution.scores) == len(words)
            else [0.0] * len(words)
        )
        # Positions in order: words the lexicon knows as triggers of the opposite direction, then
        # the lead word (the paper's "What ..."/"Share ..." form), then the words whose
        # attribution pushes hardest against the target.
        sign = 1.0 if target == "compliance" else -1.0
        opposing = {w: rank for rank, w in enumerate(opposing_triggers)}

        def priority(i: int) -> tuple:
            word = words[i].text.lower()
            return (opposing.get(word, len(opposing)), i != lead, -sign * scores[i])

        positions = sorted(alnum, key=priority)
        if tags is not None:
            positions = [i for i in positions if i == lead or tags[i] not in PROTECTED_TAGS]
        candidates = []
        for index in positions[: self.max_positions]:
            old = words[index].text
            for trigger in triggers:
                if trigger.lower() == old.lower():
                    continue
                tag = tags[index] if tags is not None else None
                candidates.append((index, old, replace_word(text, words[index], trigger), tag))
        return candidates


def _target(prompt: Prompt, refused: bool | None) -> Direction | None:
    """Which way to push: refused harmful -> compliance, answered benign -> refusal."""
    if refused is None:
        return None
    if prompt.label == "harmful" and refused:
        return "compliance"
    if prompt.label == "benign" and not refused:
        return "refusal"
    return None


def _new_word(variant: str, original: str, position: int) -> str:
    return split_words(variant)[position].text


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
