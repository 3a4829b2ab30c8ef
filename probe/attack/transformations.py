"""Candidate sources: each proposes one-word edits (substitution, insertion, deletion) of a prompt.

A source is one class with ``propose(context, position)``; sources that need the model (the
gradient-guided one) compute what they need once per prompt in ``prepare``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from probe.lexicon.table import Direction
from probe.nlp import (
    inflect_like,
    is_content_word,
    stopword_set,
    tag_both,
    wordnet_synonyms,
)
from probe.query import Query, as_query
from probe.subject.text import Subject
from probe.words import Word, delete_word, replace_word, split_words

if TYPE_CHECKING:
    from probe.attack.constraints import BareTextLM

QUESTION_WORDS = frozenset({"what", "how", "who", "why", "where", "when", "which"})


@dataclass(frozen=True)
class Edit:
    """A candidate one-word edit. ``position`` indexes the original's words (for an insertion:
    the word the new one goes in front of, which is also the new word's index in ``variant``)."""

    position: int
    old_word: str
    new_word: str
    variant: Query
    replaced_pos: str | None
    source: str  # "trigger" (lexicon), "synonym" (WordNet), "guided" (gradient), "deletion"
    kind: str = "substitution"


class EditContext:
    """One prompt's words, tags, lead word and protected (content) positions.

    ``content_vocabulary``: lower-cased words known to carry requests elsewhere (the lexicon's
    ``role="content"`` entries), which an edit may not bring in either."""

    def __init__(
        self,
        query: Query | str,
        tag: bool = True,
        content_vocabulary: frozenset[str] = frozenset(),
    ) -> None:
        self.query = as_query(query)  # edits keep its image
        text = self.text = self.query.text
        self.content_vocabulary = content_vocabulary  # words the lexicon found to be content
        self.words: list[Word] = split_words(text)
        self.alnum = [i for i, w in enumerate(self.words) if not w.is_punct]
        self.lead = self.alnum[0] if self.alnum else -1
        tagged = tag_both([w.text for w in self.words]) if tag else None
        self.tags: list[str] | None = tagged[0] if tagged is not None else None  # universal
        self.fine_tags: list[str] | None = tagged[1] if tagged is not None else None  # Penn
        self.content = {i for i in self.alnum if self._is_content(i)}

    def tag(self, index: int) -> str | None:
        return self.tags[index] if self.tags is not None else None

    def _is_content(self, index: int) -> bool:
        """Content words carry the request: nouns, numbers, jargon, and adjectives that modify a
        content noun ("a fake id"). The lead word is read as the request's verb, never content."""
        if index == self.lead:
            return False
        word = self.words[index].text
        if is_content_word(word, self.tag(index)):
            return True
        if self.tag(index) == "ADJ" and word.lower() not in stopword_set():
            following = next((j for j in self.alnum if j > index), None)
            return following is not None and is_content_word(
                self.words[following].text, self.tag(following)
            )
        return False

    def substitution(self, index: int, new: str, source: str) -> Edit:
        old = self.words[index]
        variant = replace_word(self.query, old, new)
        return Edit(
            index, old.text, split_words(variant.text)[index].text, variant, self.tag(index), source
        )

    def insertion(self, index: int, new: str, source: str) -> Edit:
        at = self.words[index]
        rest = self.text[at.start :]
        if index == self.lead:
            new = new[:1].upper() + new[1:]
            if self.tag(index) not in ("PROPN",) and at.text != "I":
                rest = rest[:1].lower() + rest[1:]
        variant = self.query.with_text(self.text[: at.start] + new + " " + rest)
        return Edit(index, "", new, variant, None, source, "insertion")

    def deletion(self, index: int) -> Edit:
        old = self.words[index]
        variant = delete_word(self.query, old)
        if index == self.lead:
            words = split_words(variant.text)
            first = next((w for w in words if not w.is_punct), None)
            if first is not None:
                variant = replace_word(variant, first, first.text[:1].upper() + first.text[1:])
        return Edit(index, old.text, "", variant, self.tag(index), "deletion", "deletion")


class CandidateSource:
    """Proposes edits at one position of a prompt.

    ``limit``: None when every proposal is a candidate; else ``propose`` yields edits best
    first and only the first ``limit`` that pass the enforced cheap constraints are kept.
    """

    name = "source"
    limit: int | None = None

    def prepare(self, subject: Subject, context: EditContext, target: Direction) -> int:
        """Per-prompt work before proposing; returns the model queries it spent."""
        return 0

    def propose(self, context: EditContext, index: int) -> Iterable[Edit]:
        raise NotImplementedError

    def limit_at(
        self, context: EditContext, index: int, admissible: Callable[[list[Edit]], int]
    ) -> int | None:
        """How many of this position's proposals to keep: ``limit``, unless the source sizes it
        per position; ``admissible`` counts the edits the enforced cheap constraints accept."""
        return self.limit


class LexiconTriggers(CandidateSource):
    """The lexicon's top triggers of the target direction: substituted (inflected like the old
    word) at every position, and inserted in front of the lead word (the paper's "What ..."
    form needs a new first word, which one substitution rarely makes grammatical)."""

    name = "trigger"

    def __init__(self, triggers: Sequence[str], insert: bool = True) -> None:
        self.triggers = list(triggers)
        self.insert = insert

    def propose(self, context: EditContext, index: int) -> list[Edit]:
        old = context.words[index].text
        edits = [
            context.substitution(index, inflect_like(t, old, context.tag(index)), self.name)
            for t in self.triggers
        ]
        if self.insert and index == context.lead:
            edits += [context.insertion(index, t, self.name) for t in self.triggers]
        return edits


class WordNetSynonyms(CandidateSource):
    """Up to ``k`` single-word WordNet synonyms of the old word, same part of speech."""

    name = "synonym"

    def __init__(self, k: int = 3) -> None:
        self.k = k

    def propose(self, context: EditContext, index: int) -> list[Edit]:
        old = context.words[index].text
        return [
            context.substitution(index, s, self.name)
            for s in wordnet_synonyms(old, context.tag(index))[: self.k]
        ]


class Deletions(CandidateSource):
    """Delete the word (the constraints decide which deletions keep the request)."""

    name = "deletion"

    def propose(self, context: EditContext, index: int) -> list[Edit]:
        return [context.deletion(index)] if len(context.alnum) > 1 else []


class GradientGuided(CandidateSource):
    """Model-guided substitutions (HotFlip / AutoPrompt style first-order estimate).

    One backward pass per prompt gives g, the gradient of the margin w.r.t. the input
    embedding of each token. Replacing the first token of word i (embedding e_old) by a
    one-token real English word v changes the margin by about (e_v - e_old) . g_i; the
    ``per_position`` words with the best estimate toward the target are proposed, then the
    constraints filter them and the search scores them exactly. Real words: WordNet lemmas and
    stopwords that are a single token of the subject's tokenizer (with and without a space).
    ``per_position=None`` proposes every such word at every position, unranked: the candidate
    space of the exhaustive baseline. ``admissible_first``: keep the first ``per_position``
    words *that pass the constraints* (of the best ``examine``), not the top ``per_position``
    words of which the constraints may then reject nearly all (the thorough recipe).
    ``prior_lm`` / ``prior_weight``: rank by the estimate plus ``prior_weight`` times the log-
    probability the LM gives the word after the text before it (one more forward pass): on the
    tuned SmolLM2 the estimate alone ranks words no better than chance within a position, and
    the prior puts the first verified flip in the best 10% for 8 of 8 prompts (estimate alone:
    5 of 8; benchmarks/candidate_ranking.py, results in benchmarks/RESULTS.md).
    ``share`` (with ``admissible_first``): keep the best ``share`` of the words the constraints
    admit at a position (at least ``per_position``), not a fixed count: a lead verb admits ~800
    words, an article ~5, and a flip deep in a wide position is missed by a fixed width. The
    admitted count is estimated from a ``sample`` of the vocabulary checked by the constraints.
    """

    name = "guided"

    def __init__(
        self,
        per_position: int | None = 6,
        vocabulary: Sequence[str] | None = None,
        *,
        admissible_first: bool = False,
        examine: int = 400,
        prior_lm: BareTextLM | None = None,
        prior_weight: float = 0.0,
        share: float | None = None,
        sample: int = 40,
    ) -> None:
        self.per_position = per_position
        self.share = share
        self.sample = sample
        self.words_: list[str] = []  # the real one-token words, set by ``prepare``
        self.prior_lm = prior_lm
        self.prior_weight = prior_weight
        self.vocabulary = vocabulary
        self.admissible_first = admissible_first
        self.limit = per_position if admissible_first else None
        self.examine = examine
        self.estimates_: dict[int, list[tuple[str, float]]] = {}  # per position, best first

    def prepare(self, subject: Subject, context: EditContext, target: Direction) -> int:
        self.estimates_ = {}
        words, ids = _single_token_words(subject, tuple(self.vocabulary or _english_words()))
        self.words_ = words
        if not words:
            return 0
        encoded = subject.encode(context.query)
        embedding = subject.model.get_input_embeddings()
        # Tokens before the prompt's first word need no gradient: they run once, as a cache.
        first = min((i for i, w in enumerate(encoded.token_word) if w >= 0), default=0)
        prefix = subject.prefill(encoded.input_ids[:first]) if first else None
        tokens = torch.tensor([encoded.input_ids[first:]], device=subject.device)
        with torch.no_grad():
            embeds = subject.embed(tokens)  # a VLM's keyed image ids take their image features
        embeds.requires_grad_(True)
        margin = subject.margins_from_embeddings(embeds, prefix=prefix)
        (grad,) = torch.autograd.grad(margin.sum(), embeds)
        sign = -1.0 if target == "compliance" else 1.0
        priors: dict[int, torch.Tensor | None] = {}
        spent = 1
        if self.prior_lm is not None and self.prior_weight and self.per_position is not None:
            starts = [context.words[i].start for i in context.alnum]
            rows = self.prior_lm.next_word_log_probs(context.text, starts)
            priors = dict(zip(context.alnum, rows, strict=True))
            spent += 1
        with torch.no_grad():
            table = embedding.weight[torch.tensor(ids, device=subject.device)]
            for index in context.alnum:
                positions = encoded.word_token_positions(index)
                if not positions:
                    continue
                at = positions[0] - first
                g = grad[0, at]
                estimate = sign * (table @ g - embeds[0, at] @ g)
                prior = priors.get(index)
                if prior is not None:
                    word_ids = ids  # a word's token after a space; at the start, capitalised
                    if context.words[index].start == 0:
                        word_ids = _first_token_ids(subject.tokenizer, tuple(words), capital=True)
                    tokens = torch.tensor(word_ids, device=prior.device)
                    estimate = estimate + self.prior_weight * prior[tokens].to(estimate.device)
                old = context.words[index].text.lower()
                order = estimate.argsort(descending=True).tolist()
                if self.per_position is None:
                    limit = len(order)
                else:
                    limit = self.examine if self.admissible_first else self.per_position
                values = estimate.tolist()
                picked = [(words[j], values[j]) for j in order[: limit + 1] if words[j] != old]
                self.estimates_[index] = picked[:limit]
        return spent

    def propose(self, context: EditContext, index: int) -> Iterator[Edit]:
        yield from self._substitutions(
            context, index, (w for w, _ in self.estimates_.get(index, []))
        )

    def _substitutions(
        self, context: EditContext, index: int, words: Iterable[str]
    ) -> Iterator[Edit]:
        old = context.words[index].text
        tag = context.tag(index)
        for word in words:
            yield context.substitution(index, inflect_like(word, old, tag), self.name)

    def limit_at(
        self, context: EditContext, index: int, admissible: Callable[[list[Edit]], int]
    ) -> int | None:
        if self.share is None or self.limit is None or index not in self.estimates_:
            return self.limit
        old = context.words[index].text.lower()
        step = max(1, len(self.words_) // self.sample)  # every step-th word: a fixed sample
        words = (w for w in self.words_[::step] if w != old)
        sample = list(self._substitutions(context, index, words))
        admitted = admissible(sample) / max(1, len(sample)) * len(self.words_)
        return max(self.limit, math.ceil(self.share * admitted))


@functools.cache
def _english_words() -> tuple[str, ...]:
    """Lower-case alphabetic WordNet lemmas (<= 12 letters) plus the stopwords."""
    from probe.nlp import has_wordnet, wordnet_corpus

    words = set(stopword_set()) | QUESTION_WORDS
    if has_wordnet():
        words |= {w for w in wordnet_corpus().all_lemma_names() if w.isalpha() and len(w) <= 12}
    return tuple(sorted(w for w in words if w.isalpha()))


_VOCAB_CACHE: dict[tuple[int, int], tuple[list[str], list[int]]] = {}
_FIRST_TOKEN_CACHE: dict[tuple[int, int], list[int]] = {}


def _first_token_ids(tokenizer, words: tuple[str, ...], capital: bool) -> list[int]:
    """Each word's first token at the start of a text (capitalised with ``capital``), cached."""
    key = (id(tokenizer), hash((words, capital)))
    if key not in _FIRST_TOKEN_CACHE:
        texts = [w[:1].upper() + w[1:] if capital else w for w in words]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        _FIRST_TOKEN_CACHE[key] = [ids[0] for ids in encoded]
    return _FIRST_TOKEN_CACHE[key]


def _single_token_words(
    subject: Subject, vocabulary: tuple[str, ...]
) -> tuple[list[str], list[int]]:
    """Words of ``vocabulary`` that are one token after a space, and that token (cached)."""
    key = (id(subject.tokenizer), hash(vocabulary))
    if key not in _VOCAB_CACHE:
        tokenizer = subject.tokenizer
        unk = tokenizer.unk_token_id
        spaced = tokenizer([" " + w for w in vocabulary], add_special_tokens=False)["input_ids"]
        bare = tokenizer(list(vocabulary), add_special_tokens=False)["input_ids"]
        words, ids = [], []
        for word, a, b in zip(vocabulary, spaced, bare, strict=True):
            if len(a) == 1 and len(b) == 1 and a[0] != unk:
                words.append(word)
                ids.append(a[0])
        _VOCAB_CACHE[key] = (words, ids)
    return _VOCAB_CACHE[key]
