"""One-word substitution attack: prove a trigger by flipping the model with a single-word edit.

Harmful prompts the model refuses get compliance triggers (attack success); benign prompts it
answers get refusal triggers (over-refusal). Candidates change exactly one word: a lexicon
trigger (inflected like the word it replaces) or a WordNet synonym of that word. Positions are
searched most decisive first, candidates are scored by the margin in batches, and promising
ones are verified by greedy generation + the judge; only verified flips count. Content words
(nouns, except in the lead position, where the tagger reads imperatives like "Share" as nouns)
are never replaced, so a flip measures a shortcut, not a changed request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from probe.attribution.base import WordAttribution
from probe.data import Prompt
from probe.errors import ProbeError
from probe.judge import RefusalJudge
from probe.lexicon_table import Direction, TriggerLexicon
from probe.nlp import has_tagger, has_wordnet, inflect_like, universal_tags, wordnet_synonyms
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
    source: str
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


@dataclass(frozen=True)
class Edit:
    """A candidate one-word edit: which word, what replaces it, and where the word came from."""

    position: int
    old_word: str
    new_word: str
    variant: str
    replaced_pos: str | None
    source: str  # "trigger" (lexicon) or "synonym" (WordNet)


class OneWordAttack:
    """Search one-word edits that flip the model, under a per-prompt query budget.

    ``search="guided"`` walks positions in priority order (known opposing triggers, then the
    lead word, then attribution order), scores that position's candidates in one batch and
    verifies the ones whose margin crosses zero, stopping at the first verified flip.
    ``search="exhaustive"`` scores every candidate at every position first (the baseline that
    ``benchmarks/attack_efficiency.py`` compares against). A query is one margin evaluation or
    one generation.
    """

    def __init__(
        self,
        top_k_triggers: int = 5,
        max_queries: int = 40,
        max_verify: int = 3,
        max_new_tokens: int = 24,
        protect_content: bool = True,
        synonyms: bool = True,
        search: str = "guided",
    ) -> None:
        self.top_k_triggers = top_k_triggers
        self.max_queries = max_queries
        self.max_verify = max_verify
        self.max_new_tokens = max_new_tokens
        self.protect_content = protect_content
        self.synonyms = synonyms
        self.search = search

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
        if self.search not in ("guided", "exhaustive"):
            raise ProbeError(f"unknown attack search {self.search!r}; use guided or exhaustive")
        by_id = {a.id: a for a in attributions}
        notes: list[str] = []
        if self.protect_content and not has_tagger():
            notes.append("no POS tagger data: content words are not protected")
        if self.synonyms and not has_wordnet():
            notes.append("no WordNet data: lexicon triggers only, no synonym candidates")
        result = AttackResult([], {}, set(), 0, notes)
        for prompt in tqdm(prompts, desc="attack", unit="prompt", disable=not progress):
            target = _target(prompt, refused.get(prompt.id))
            if target is None:
                continue
            opposite: Direction = "refusal" if target == "compliance" else "compliance"
            triggers = lexicon.top(target, self.top_k_triggers)
            if not triggers:
                notes.append(f"no {target} triggers in the lexicon")
                continue
            result.attacked[prompt.id] = target
            attribution = by_id.get(prompt.id)
            plan = self._plan(
                prompt.prompt, attribution, target, triggers, lexicon.top(opposite, 10)
            )
            before = (
                attribution.margin
                if attribution is not None
                else float(subject.prompt_margins([prompt.prompt])[0])
            )
            self._attack_one(subject, judge, prompt, target, plan, before, refused, result)
        result.notes = sorted(set(notes))
        return result

    def _attack_one(
        self,
        subject: Subject,
        judge: RefusalJudge,
        prompt: Prompt,
        target: Direction,
        plan: list[list[Edit]],
        before: float,
        refused: dict[str, bool],
        result: AttackResult,
    ) -> None:
        """Score and verify the plan's edits (grouped by position) for one prompt."""
        if self.search == "exhaustive":
            plan = [[edit for group in plan for edit in group]]
        toward = -1.0 if target == "compliance" else 1.0  # sign of a margin that crossed
        queries = verified = 0
        best: list[tuple[float, Edit]] = []
        for group in plan:
            if self.search == "guided" and queries >= self.max_queries:
                break
            if not group:
                continue
            margins = subject.prompt_margins([e.variant for e in group])
            queries += len(group)
            ranked = sorted(zip(margins.tolist(), group, strict=True), key=lambda m: -toward * m[0])
            best += ranked[: self.max_verify]
            for margin, edit in ranked:
                if toward * margin <= 0 or verified >= self.max_verify:
                    break
                verified += 1
                queries += 1
                if self._verify(
                    subject, judge, prompt, target, edit, before, margin, refused, queries, result
                ):
                    result.queries += queries
                    return
        # Nothing crossed (or nothing verified): verify the best-scoring edits anyway.
        for margin, edit in sorted(best, key=lambda m: -toward * m[0]):
            if verified >= self.max_verify or toward * margin > 0:
                continue
            verified += 1
            queries += 1
            if self._verify(
                subject, judge, prompt, target, edit, before, margin, refused, queries, result
            ):
                break
        result.queries += queries

    def _verify(
        self,
        subject: Subject,
        judge: RefusalJudge,
        prompt: Prompt,
        target: Direction,
        edit: Edit,
        before: float,
        after: float,
        refused: dict[str, bool],
        queries: int,
        result: AttackResult,
    ) -> bool:
        """Generate for the edited prompt, judge it, record it; True when it flipped."""
        response = subject.generate([edit.variant], self.max_new_tokens)[0]
        judged = judge.is_refusal(response)
        success = judged == (target == "refusal")
        result.records.append(
            AttackRecord(
                id=prompt.id,
                label=prompt.label,
                target=target,
                original=prompt.prompt,
                variant=edit.variant,
                position=edit.position,
                old_word=edit.old_word,
                new_word=edit.new_word,
                replaced_pos=edit.replaced_pos,
                source=edit.source,
                margin_before=before,
                margin_after=after,
                flipped=success,
                judged_refusal_before=bool(refused[prompt.id]),
                judged_refusal_after=judged,
                response_after=response,
                queries=queries,
            )
        )
        if success:
            result.flipped_ids.add(prompt.id)
        return success

    def _plan(
        self,
        text: str,
        attribution: WordAttribution | None,
        target: Direction,
        triggers: Sequence[str],
        opposing_triggers: Sequence[str],
    ) -> list[list[Edit]]:
        """Candidate edits grouped by position, positions in search order.

        Position order: words the lexicon knows as triggers of the opposite direction, then the
        lead word (the paper's "What ..."/"Share ..." form), then the words whose attribution
        pushes hardest against the target. Content words (nouns, numbers) are never replaced,
        except in the lead position, where the tagger reads imperatives ("Share") as nouns.
        Within a position: lexicon triggers in lexicon order, then WordNet synonyms.
        """
        words = split_words(text)
        alnum = [i for i, w in enumerate(words) if not w.is_punct]
        if not alnum:
            return []
        tags = universal_tags([w.text for w in words]) if self.protect_content else None
        lead = alnum[0]
        scores = (
            attribution.scores
            if attribution is not None and len(attribution.scores) == len(words)
            else [0.0] * len(words)
        )
        sign = 1.0 if target == "compliance" else -1.0
        opposing = {w: rank for rank, w in enumerate(opposing_triggers)}

        def priority(i: int) -> tuple:
            word = words[i].text.lower()
            return (opposing.get(word, len(opposing)), i != lead, -sign * scores[i])

        positions = sorted(alnum, key=priority)
        if tags is not None:
            positions = [i for i in positions if i == lead or tags[i] not in PROTECTED_TAGS]
        plan = []
        for index in positions:
            old = words[index].text
            tag = tags[index] if tags is not None else None
            options = [(inflect_like(t, old, tag), "trigger") for t in triggers]
            if self.synonyms:
                options += [(s, "synonym") for s in wordnet_synonyms(old, tag)[:3]]
            seen = {old.lower()}
            group = []
            for new, source in options:
                if new.lower() in seen:
                    continue
                seen.add(new.lower())
                variant = replace_word(text, words[index], new)
                group.append(
                    Edit(index, old, split_words(variant)[index].text, variant, tag, source)
                )
            plan.append(group)
        return plan


def _target(prompt: Prompt, refused: bool | None) -> Direction | None:
    """Which way to push: refused harmful -> compliance, answered benign -> refusal."""
    if refused is None:
        return None
    if prompt.label == "harmful" and refused:
        return "compliance"
    if prompt.label == "benign" and not refused:
        return "refusal"
    return None


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
