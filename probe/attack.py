"""One-word substitution attack: prove a trigger by flipping the model with a single-word edit.

Harmful prompts the model refuses get compliance triggers (attack success); benign prompts it
answers get refusal triggers (over-refusal). Candidates change exactly one word: a lexicon
trigger (inflected like the word it replaces) or a WordNet synonym of that word. Positions are
searched most decisive first, candidates are scored by the margin in batches, and promising
ones are verified by greedy generation + the judge; only verified flips count. Content words
(``probe.nlp.is_content_word``: nouns and unknown jargon; the lead word and known opposing
triggers excepted) are never replaced, so a flip measures a shortcut, not a changed request.
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
from probe.nlp import (
    has_tagger,
    has_wordnet,
    inflect_like,
    is_content_word,
    universal_tags,
    wordnet_synonyms,
)
from probe.stats import wilson_interval
from probe.subject import Subject
from probe.words import replace_word, split_words


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


@dataclass
class _PromptSearch:
    """Search state of one attacked prompt."""

    prompt: Prompt
    target: Direction
    plan: list[list[Edit]]
    before: float | None
    next_group: int = 0
    queries: int = 0
    verified: int = 0
    best: list[tuple[float, Edit]] = field(default_factory=list)
    pending: list[tuple[float, Edit]] = field(default_factory=list)

    @property
    def toward(self) -> float:
        """Sign of a margin that has crossed to the target side."""
        return -1.0 if self.target == "compliance" else 1.0


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
        searches: list[_PromptSearch] = []
        for prompt in prompts:
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
            if self.search == "exhaustive":
                plan = [[edit for group in plan for edit in group]]
            before = attribution.margin if attribution is not None else None
            searches.append(_PromptSearch(prompt, target, plan, before))
        missing = [s for s in searches if s.before is None]
        if missing:
            for search, margin in zip(
                missing, subject.prompt_margins([s.prompt.prompt for s in missing]), strict=True
            ):
                search.before = float(margin)
        self._search(subject, judge, searches, refused, result, progress)
        result.notes = sorted(set(notes))
        return result

    def _search(
        self,
        subject: Subject,
        judge: RefusalJudge,
        searches: list[_PromptSearch],
        refused: dict[str, bool],
        result: AttackResult,
        progress: bool,
    ) -> None:
        """Run every prompt's search in rounds, batching model calls across prompts.

        Round r scores the r-th position group of every unfinished prompt in one margin batch,
        then verifies the candidates that crossed zero, best first, one generation batch per
        step, until each prompt flips or runs out of verifications. Per prompt the decisions
        are those of a one-prompt-at-a-time search; only the batching differs.
        """
        bar = tqdm(total=len(searches), desc="attack", unit="prompt", disable=not progress)
        active = list(searches)
        while active:
            scoring = [
                s
                for s in active
                if s.next_group < len(s.plan)
                and not (self.search == "guided" and s.queries >= self.max_queries)
            ]
            if not scoring:
                break
            groups = [s.plan[s.next_group] for s in scoring]
            variants = [edit.variant for group in groups for edit in group]
            margins = iter(subject.prompt_margins(variants).tolist())
            for search, group in zip(scoring, groups, strict=True):
                search.next_group += 1
                search.queries += len(group)
                ranked = sorted(
                    ((next(margins), edit) for edit in group), key=lambda m: -search.toward * m[0]
                )
                search.best += ranked[: self.max_verify]
                search.pending = [m for m in ranked if search.toward * m[0] > 0]
            self._verify_pending(subject, judge, scoring, refused, result)
            active = [
                s
                for s in active
                if s.prompt.id not in result.flipped_ids and s.verified < self.max_verify
            ]
            bar.update(len(searches) - len(active) - bar.n)
        # Nothing crossed, or nothing verified yet: verify the best-scoring edits anyway.
        leftovers = [s for s in searches if s.prompt.id not in result.flipped_ids]
        for search in leftovers:
            search.pending = sorted(
                (m for m in search.best if search.toward * m[0] <= 0),
                key=lambda m: -search.toward * m[0],
            )
        self._verify_pending(subject, judge, leftovers, refused, result)
        bar.update(len(searches) - bar.n)
        bar.close()
        result.queries += sum(s.queries for s in searches)

    def _verify_pending(
        self,
        subject: Subject,
        judge: RefusalJudge,
        searches: list[_PromptSearch],
        refused: dict[str, bool],
        result: AttackResult,
    ) -> None:
        """Verify pending edits (best first) by generation + judge, one batch per step."""
        while True:
            batch = [
                s
                for s in searches
                if s.pending
                and s.verified < self.max_verify
                and s.prompt.id not in result.flipped_ids
            ]
            if not batch:
                return
            steps = [(s, *s.pending.pop(0)) for s in batch]
            responses = subject.generate(
                [edit.variant for _, _, edit in steps], self.max_new_tokens
            )
            for (search, margin, edit), response in zip(steps, responses, strict=True):
                search.verified += 1
                search.queries += 1
                judged = judge.is_refusal(response)
                success = judged == (search.target == "refusal")
                result.records.append(
                    AttackRecord(
                        id=search.prompt.id,
                        label=search.prompt.label,
                        target=search.target,
                        original=search.prompt.prompt,
                        variant=edit.variant,
                        position=edit.position,
                        old_word=edit.old_word,
                        new_word=edit.new_word,
                        replaced_pos=edit.replaced_pos,
                        source=edit.source,
                        margin_before=float(search.before),
                        margin_after=margin,
                        flipped=success,
                        judged_refusal_before=bool(refused[search.prompt.id]),
                        judged_refusal_after=judged,
                        response_after=response,
                        queries=search.queries,
                    )
                )
                if success:
                    result.flipped_ids.add(search.prompt.id)

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
        pushes hardest against the target. Content words (``is_content_word``) are never
        replaced, except in the lead position, where the tagger reads imperatives ("Share") as
        nouns, and where the word is itself a known opposing trigger.
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
        if self.protect_content:
            positions = [
                i
                for i in positions
                if i == lead
                or words[i].text.lower() in opposing
                or not is_content_word(words[i].text, tags[i] if tags is not None else None)
            ]
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
