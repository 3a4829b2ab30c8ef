"""Search strategies: in which order candidate edits are scored and verified.

``GuidedSearch`` walks positions in priority order under the goal's query budget, stopping a
prompt at its first verified flip; ``ExhaustiveSearch`` scores every candidate of every position
first (the baseline of benchmarks/attack_efficiency.py). Both run all prompts in rounds so model
calls are batched across prompts; per prompt the decisions are those of a one-at-a-time search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from probe.attack.goal import Goal
from probe.attack.records import AttackRecord, AttackResult
from probe.attack.transformations import Edit, EditContext
from probe.data import Prompt
from probe.judge import RefusalJudge
from probe.subject.text import Subject

Candidate = tuple[Edit, dict]  # an edit and its constraint values so far


@dataclass
class SearchMemo:
    """What earlier searches of the same prompts paid for: each scored variant's margin, keyed
    by (prompt id, its token ids: the margin is a function of them), and the variants already
    verified (generated and judged), keyed by (prompt id, text). A cascade hands one memo to
    every stage, so a later stage neither re-scores an edit (its margin is read back at no
    query) nor verifies one again."""

    margins: dict[tuple[str, tuple[int, ...]], float] = field(default_factory=dict)
    verified: set[tuple[str, str]] = field(default_factory=set)


class Plan:
    """A prompt's candidate groups in search order, each built on first use: proposing and
    checking the candidates of a position (tagging every edited sentence) is paid only for
    the positions the search reaches, not for those after a prompt's first verified flip."""

    def __init__(self, keys: Sequence[int], build: Callable[[int], list[Candidate]]) -> None:
        self.keys = list(keys)
        self.build = build
        self._built: dict[int, list[Candidate]] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> list[Candidate]:
        if index not in self._built:
            self._built[index] = self.build(self.keys[index])
        return self._built[index]


@dataclass
class PromptSearch:
    """Search state of one attacked prompt. ``prefix``: the KV cache of the prompt's chat
    tokens, computed once and shared by the margin batches of all its positions."""

    prompt: Prompt
    goal: Goal
    context: EditContext
    plan: Plan
    before: float | None
    base_ids: tuple[int, ...] = ()
    prefix: object = None
    next_group: int = 0
    queries: int = 0
    verified: int = 0
    best: list[tuple[float, Edit, dict]] = field(default_factory=list)
    pending: list[tuple[float, Edit, dict]] = field(default_factory=list)


# Checks a prompt's candidates (best first) before verification: adds the costly constraint
# values and drops the candidates the enforced constraints reject, stopping once it has kept
# the given number (only that many can still be verified).
Screen = Callable[
    [PromptSearch, list[tuple[float, Edit, dict]], int], list[tuple[float, Edit, dict]]
]


class GuidedSearch:
    name = "guided"
    budgeted = True

    def order(self, plan: Plan) -> Plan:
        return plan


class ExhaustiveSearch(GuidedSearch):
    name = "exhaustive"
    budgeted = False

    def order(self, plan: Plan) -> Plan:
        return Plan([0], lambda _: [c for i in range(len(plan)) for c in plan[i]])


SEARCHES = {"guided": GuidedSearch, "exhaustive": ExhaustiveSearch}


def run_search(
    strategy: GuidedSearch,
    subject: Subject,
    judge: RefusalJudge,
    searches: list[PromptSearch],
    refused: dict[str, bool],
    result: AttackResult,
    screen: Screen,
    *,
    max_verify: int,
    max_new_tokens: int,
    memo: SearchMemo | None = None,
    progress: bool = False,
) -> None:
    """Score each prompt's next position group (one margin batch per prompt, shared prefix),
    verify the screened candidates that crossed zero, best first, one generation batch per step;
    then verify the best-scoring screened edits of prompts that never crossed. Margins and
    verifications already in ``memo`` are reused, not queried (nor counted) again."""
    memo = memo if memo is not None else SearchMemo()
    bar = tqdm(total=len(searches), desc="attack", unit="prompt", disable=not progress)
    active = list(searches)
    while active:
        scoring = [s for s in active if _can_score(strategy, s)]
        if not scoring:
            break
        for search in scoring:
            group = search.plan[search.next_group]
            search.next_group += 1
            if not group:
                continue
            pid = search.prompt.id
            keys = [(pid, tuple(subject.encode(edit.variant).input_ids)) for edit, _ in group]
            fresh = [key for key in dict.fromkeys(keys) if key not in memo.margins]
            if fresh:
                if search.prefix is None:
                    search.prefix = subject.prefill(search.base_ids)
                scored = subject.shared_prefix_margins(
                    search.base_ids, [list(ids) for _, ids in fresh], prefix=search.prefix
                ).tolist()
                memo.margins.update(zip(fresh, scored, strict=True))
                search.queries += len(fresh)
            ranked = sorted(
                (
                    (memo.margins[key], edit, values)
                    for key, (edit, values) in zip(keys, group, strict=True)
                    if (pid, edit.variant.text) not in memo.verified
                ),
                key=lambda m: -search.goal.progress(m[0]),
            )
            crossed = [m for m in ranked if search.goal.progress(m[0]) > 0]
            search.pending = screen(search, crossed, max_verify - search.verified)
            search.best += ranked[: max_verify * 3]
        _verify_pending(subject, judge, scoring, refused, result, max_verify, max_new_tokens, memo)
        active = [
            s for s in active if s.prompt.id not in result.flipped_ids and s.verified < max_verify
        ]
        scoring_next = {id(s) for s in active if _can_score(strategy, s)}
        for search in searches:
            if id(search) not in scoring_next:
                search.prefix = None  # done scoring: free its KV cache
        bar.update(len(searches) - len(active) - bar.n)
    leftovers = [s for s in searches if s.prompt.id not in result.flipped_ids]
    for search in leftovers:
        near = sorted(
            (m for m in search.best if search.goal.progress(m[0]) <= 0),
            key=lambda m: -search.goal.progress(m[0]),
        )
        search.pending = screen(search, near, max_verify - search.verified)
    _verify_pending(subject, judge, leftovers, refused, result, max_verify, max_new_tokens, memo)
    bar.update(len(searches) - bar.n)
    bar.close()
    for search in searches:
        result.queries_by_prompt[search.prompt.id] = search.queries
    result.queries += sum(s.queries for s in searches)


def _can_score(strategy: GuidedSearch, search: PromptSearch) -> bool:
    """Whether the search has a position group left to score within its budget."""
    return search.next_group < len(search.plan) and not (
        strategy.budgeted and search.queries >= search.goal.max_queries
    )


def _verify_pending(
    subject: Subject,
    judge: RefusalJudge,
    searches: list[PromptSearch],
    refused: dict[str, bool],
    result: AttackResult,
    max_verify: int,
    max_new_tokens: int,
    memo: SearchMemo,
) -> None:
    """Verify pending edits (best first) by generation + judge, one batch per step."""
    while True:
        batch = [
            s
            for s in searches
            if s.pending and s.verified < max_verify and s.prompt.id not in result.flipped_ids
        ]
        if not batch:
            return
        steps = [(s, *s.pending.pop(0)) for s in batch]
        responses = subject.generate([edit.variant for _, _, edit, _ in steps], max_new_tokens)
        verdicts = judge.verdicts(responses)
        for (search, margin, edit, values), response, verdict in zip(
            steps, responses, verdicts, strict=True
        ):
            search.verified += 1
            search.queries += 1
            memo.verified.add((search.prompt.id, edit.variant.text))
            judged = verdict.refusal
            success = search.goal.succeeded(judged)
            assert search.before is not None  # OneWordAttack fills in every missing margin
            result.records.append(
                AttackRecord(
                    id=search.prompt.id,
                    label=search.prompt.label,
                    target=search.goal.target,
                    original=search.prompt.prompt,
                    variant=edit.variant.text,
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
                    judge=verdict.to_record(),
                    queries=search.queries,
                    kind=edit.kind,
                    image=str(edit.variant.image) if edit.variant.image else None,
                    **values,
                )
            )
            if success:
                result.flipped_ids.add(search.prompt.id)
