"""``OneWordAttack``: goal + candidate sources + constraints + search, composed per prompt."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence

from probe.attack.constraints import (
    BareTextLM,
    Constraint,
    ContentConstraint,
    FluencyConstraint,
    PartOfSpeechConstraint,
    default_max_drop,
    null_values,
)
from probe.attack.goal import Goal, target_for
from probe.attack.records import EDIT_KINDS, AttackResult
from probe.attack.search import (
    SEARCHES,
    Candidate,
    Plan,
    PromptSearch,
    SearchMemo,
    run_search,
)
from probe.attack.transformations import (
    CandidateSource,
    Deletions,
    Edit,
    EditContext,
    GradientGuided,
    LexiconTriggers,
    WordNetSynonyms,
)
from probe.attribution.base import WordAttribution
from probe.data import Prompt
from probe.errors import ProbeError
from probe.judge import RefusalJudge
from probe.lexicon.table import Direction, TriggerLexicon
from probe.nlp import has_tagger, has_wordnet
from probe.subject.text import Subject

CONSTRAINTS = ("content", "pos", "fluency")


class OneWordAttack:
    """Search one-word edits (substitution, insertion, deletion) that flip the model.

    Parameters (see ``probe/attack/recipes/default.py`` for why each default):
    ``top_k_triggers`` lexicon triggers per direction; ``max_queries`` margin queries per
    prompt (guided search); ``max_verify`` generations per prompt; ``edit_kinds``;
    ``constraints`` enforced (any of content, pos, fluency; all values are recorded anyway);
    ``synonyms`` / ``guided`` turn the WordNet and gradient-guided sources on;
    ``guided_per_position`` gradient-ranked words per position, the top ones, or with
    ``guided_admissible`` the best that pass the cheap constraints (``recipes/thorough.py``);
    ``guided_prior_weight`` weighs the fluency LM's log-probability of a guided word in its
    place against the gradient's estimate (0: the estimate alone); ``guided_share`` (with
    ``guided_admissible``) keeps that share of each position's admitted words instead, at
    least ``guided_per_position``;
    ``search`` is "guided" or "exhaustive"; ``fluency_lm`` is a ``BareTextLM`` (default: the
    subject's own LM head over the bare text) and ``max_fluency_drop`` its threshold in nats
    per token (None: the calibrated ``default_max_drop`` for the LM's size).
    A query is one margin evaluation, one generation, or one gradient or LM-prior pass.
    """

    def __init__(
        self,
        top_k_triggers: int = 5,
        max_queries: int = 40,
        max_verify: int = 3,
        max_new_tokens: int = 24,
        edit_kinds: Sequence[str] = EDIT_KINDS,
        constraints: Sequence[str] = CONSTRAINTS,
        synonyms: bool = True,
        guided: bool = True,
        guided_per_position: int = 6,
        guided_admissible: bool = False,
        guided_prior_weight: float = 0.0,
        guided_share: float | None = None,
        search: str = "guided",
        fluency_lm: BareTextLM | None = None,
        max_fluency_drop: float | None = None,
    ) -> None:
        self.top_k_triggers = top_k_triggers
        self.max_queries = max_queries
        self.max_verify = max_verify
        self.max_new_tokens = max_new_tokens
        self.edit_kinds = tuple(edit_kinds)
        self.constraints = tuple(constraints)
        self.synonyms = synonyms
        self.guided = guided
        self.guided_per_position = guided_per_position
        self.guided_admissible = guided_admissible
        self.guided_prior_weight = guided_prior_weight
        self.guided_share = guided_share
        self.search = search
        self.fluency_lm = fluency_lm
        self.max_fluency_drop = max_fluency_drop

    def _check_params(self) -> None:
        if self.search not in SEARCHES:
            raise ProbeError(f"unknown attack search {self.search!r}; use guided or exhaustive")
        for kind in self.edit_kinds:
            if kind not in EDIT_KINDS:
                raise ProbeError(f"unknown edit kind {kind!r}; use {', '.join(EDIT_KINDS)}")
        for name in self.constraints:
            if name not in CONSTRAINTS:
                raise ProbeError(f"unknown constraint {name!r}; use {', '.join(CONSTRAINTS)}")

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
        """Attack every labelled prompt whose judged behaviour matches its label; ``memo``
        holds what an earlier attack on these prompts already scored and verified."""
        self._check_params()
        by_id = {a.id: a for a in attributions}
        notes: list[str] = []
        tagged = has_tagger()
        if not tagged:
            notes.append("no POS tagger data: content words and part of speech are not checked")
        if self.synonyms and not has_wordnet():
            notes.append("no WordNet data: no synonym candidates")
        lm = self.fluency_lm or BareTextLM(subject.model, subject.tokenizer, subject.batch_size)
        max_drop = self.max_fluency_drop
        if max_drop is None:
            max_drop = default_max_drop(lm.model)
        fluency = FluencyConstraint(lm, max_drop)
        cheap: list[Constraint] = [ContentConstraint(), PartOfSpeechConstraint()]
        enforced = set(self.constraints)
        result = AttackResult([], {}, set(), 0, notes)
        strategy = SEARCHES[self.search]()
        searches: list[PromptSearch] = []
        # Exhaustive search covers the whole space the guided source ranks: every real word.
        per_position = None if self.search == "exhaustive" else self.guided_per_position
        contexts = {p.id: EditContext(p.query, tagged) for p in prompts}
        # Words that carry a request anywhere (lexicon content entries, content words of any
        # prompt): an edit may not bring one in ("Teach ..." -> "Poison ...").
        content_vocabulary = frozenset(
            e.word.lower() for e in lexicon.entries if e.role == "content"
        ) | {c.words[i].text.lower() for c in contexts.values() for i in c.content}
        for prompt in prompts:
            target = target_for(prompt, refused.get(prompt.id))
            if target is None:
                continue
            opposite: Direction = "refusal" if target == "compliance" else "compliance"
            triggers = _triggers(lexicon, target, self.top_k_triggers)
            if not triggers and not self.guided:
                notes.append(f"no {target} triggers in the lexicon")
                continue
            result.attacked[prompt.id] = target
            context = contexts[prompt.id]
            context.content_vocabulary = content_vocabulary
            sources: list[CandidateSource] = [
                LexiconTriggers(triggers, insert="insertion" in self.edit_kinds)
            ]
            if self.synonyms:
                sources.append(WordNetSynonyms())
            spent = 0
            if self.guided:  # one source per prompt: its ranking is that prompt's gradient
                guided = GradientGuided(
                    per_position,
                    admissible_first=self.guided_admissible,
                    prior_lm=lm,
                    prior_weight=self.guided_prior_weight,
                    share=self.guided_share,
                )
                spent = guided.prepare(subject, context, target)
                sources.append(guided)
            if "deletion" in self.edit_kinds:
                sources.append(Deletions())
            attribution = by_id.get(prompt.id)
            plan = self._plan(
                context,
                attribution,
                target,
                _triggers(lexicon, opposite, 10),
                sources,
                cheap,
                enforced,
            )
            goal = Goal(target, self.max_queries)
            before = attribution.margin if attribution is not None else None
            ids = subject.encode(prompt.query).input_ids
            searches.append(
                PromptSearch(
                    prompt, goal, context, strategy.order(plan), before, ids, queries=spent
                )
            )
        missing = [s for s in searches if s.before is None]
        if missing:
            margins = subject.prompt_margins([s.prompt.query for s in missing])
            for search, margin in zip(missing, margins, strict=True):
                search.before = float(margin)

        def screen(search: PromptSearch, candidates: list, need: int) -> list:
            """The first ``need`` candidates (best first) that pass the enforced constraints
            once fluency is added: scored under the LM ``need`` at a time, in one batch, so
            the LM reads only candidates that can still be verified."""
            kept: list = []
            start = 0
            while len(kept) < need and start < len(candidates):
                chunk = candidates[start : start + need]
                start += len(chunk)
                values = fluency.values(search.context, [edit for _, edit, _ in chunk])
                for (margin, edit, cheap_values), fluent in zip(chunk, values, strict=True):
                    merged = {**cheap_values, **fluent}
                    if "fluency" in enforced and not fluency.accepts(merged):
                        continue
                    if (
                        "pos" in enforced
                        and merged.get("pos_rule") == "lead-question"
                        and merged.get("fluency_ok") is not True
                    ):
                        continue
                    kept.append((margin, edit, merged))
            return kept[:need]

        run_search(
            strategy,
            subject,
            judge,
            searches,
            refused,
            result,
            screen,
            max_verify=self.max_verify,
            max_new_tokens=self.max_new_tokens,
            memo=memo,
            progress=progress,
        )
        result.fluency_evaluations = fluency.evaluations
        result.notes = sorted(set(notes))
        return result

    def _plan(
        self,
        context: EditContext,
        attribution: WordAttribution | None,
        target: Direction,
        opposing_triggers: Sequence[str],
        sources: Sequence[CandidateSource],
        cheap: Sequence[Constraint],
        enforced: set[str],
    ) -> Plan:
        """Candidate edits with their cheap constraint values, grouped by position in search
        order: known opposing triggers, then the lead word (the paper's "What ..."/"Share ..."
        form), then the words whose attribution pushes hardest against the target. Edits the
        enforced cheap constraints reject are dropped here, before any model query; the
        constraints run cheapest first, each only on the edits the enforced ones before it
        kept (values of kept edits are complete). A group is built when the search reaches it."""
        words = context.words
        scores = (
            attribution.scores
            if attribution is not None and len(attribution.scores) == len(words)
            else [0.0] * len(words)
        )
        sign = 1.0 if target == "compliance" else -1.0
        opposing = {w: rank for rank, w in enumerate(opposing_triggers)}

        def priority(i: int) -> tuple:
            word = words[i].text.lower()
            return (opposing.get(word, len(opposing)), i != context.lead, -sign * scores[i])

        def check(edits: list[Edit]) -> list[Candidate]:
            """The edits the enforced cheap constraints accept, with every cheap value."""
            values: list[dict] = [dict() for _ in edits]
            alive = list(range(len(edits)))
            for constraint in cheap:
                checked = constraint.values(context, [edits[i] for i in alive])
                for i, new in zip(alive, checked, strict=True):
                    values[i].update(new)
                if constraint.name in enforced:
                    alive = [i for i in alive if constraint.accepts(values[i])]
            return [(edits[i], {**values[i], **null_values()}) for i in alive]

        def group(index: int) -> list[Candidate]:
            seen = {("substitution", words[index].text.lower())}

            def unseen(edits: Iterable[Edit]) -> Iterator[Edit]:
                for edit in edits:
                    key = (edit.kind, edit.new_word.lower())
                    if edit.kind in self.edit_kinds and key not in seen:
                        seen.add(key)
                        yield edit

            kept: list[Candidate] = []
            for source in sources:
                fresh = unseen(source.propose(context, index))
                limit = source.limit_at(context, index, lambda edits: len(check(edits)))
                if limit is None:
                    kept += check(list(fresh))
                    continue
                # A ranked source: check its proposals best first, a chunk at a time, until
                # ``limit`` pass or it runs out.
                found: list[Candidate] = []
                while len(found) < limit:
                    chunk = list(itertools.islice(fresh, 2 * limit))
                    if not chunk:
                        break
                    found += check(chunk)
                kept += found[:limit]
            return kept

        return Plan(sorted(context.alnum, key=priority), group)


def _triggers(lexicon: TriggerLexicon, direction: Direction, k: int) -> list[str]:
    """The top ``k`` words of a direction whose role is "trigger" (not content, not weak)."""
    return [e.word for e in lexicon.ranked(direction) if e.role in (None, "trigger")][:k]
