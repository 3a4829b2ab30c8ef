"""LexiconBuilder: from word attributions to a ranked, tested trigger lexicon.

scikit-learn style: parameters in ``__init__``, ``fit(attributions)`` returns self, learned state
in trailing-underscore attributes. Per word (lower-cased, lemmatised with WordNet when available)
the per-prompt attribution (summed over its occurrences in that prompt) is the unit of evidence:
effect = mean over prompts containing the word, a bootstrap CI, a sign-flip test p-value, BH
q-values across words, sign consistency, and a position profile (lead word vs elsewhere).

Ranking is by the *conservative* end of the interval (the CI bound nearest zero), so a word
needs both a large effect and enough consistent support to rank high: one dramatic prompt
does not beat a word that flips the model every time it appears.

Content words (``probe.nlp.is_content_word``: nouns, numbers and unknown jargon, judged outside
the lead position where imperatives like "Share" are mis-tagged as nouns) carry what the request is
about: "bomb" pushing toward refusal is the model working, not a shortcut. They stay in the
table with ``role="content"`` but rank after the ``role="trigger"`` words of their direction.
Without NLTK data, the prompt labels stand in (see ``_role``).

Practical significance: a word whose |effect| is below ``effect_floor`` times the spread
(standard deviation) of the prompts' margins is listed with ``role="weak"``, not as a trigger,
however small its p-value: a +0.07 nudge on margins that vary by several units is not a
shortcut. Weak words rank after the triggers of their direction, before content words.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from probe.attribution.base import WordAttribution
from probe.lexicon.stats import benjamini_hochberg, bootstrap_ci, sign_flip_p_value
from probe.lexicon.table import LexiconEntry, TriggerLexicon
from probe.nlp import (
    has_tagger,
    has_wordnet,
    is_content_word,
    stopword_set,
    universal_tags,
    word_normaliser,
)


class LexiconBuilder:
    """Rank trigger words from word attributions (positive = toward refusal)."""

    def __init__(
        self,
        min_support: int = 3,
        separate_content: bool = True,
        drop_stopwords: bool = False,
        lemmatize: bool = True,
        confidence: float = 0.95,
        n_bootstrap: int = 1000,
        n_permutations: int = 10000,
        seed: int = 0,
        effect_floor: float = 0.1,
    ) -> None:
        self.min_support = min_support
        self.separate_content = separate_content
        self.drop_stopwords = drop_stopwords
        self.lemmatize = lemmatize
        self.confidence = confidence
        self.n_bootstrap = n_bootstrap
        self.n_permutations = n_permutations
        self.seed = seed
        self.effect_floor = effect_floor

    def fit(self, attributions: Sequence[WordAttribution]) -> LexiconBuilder:
        """Aggregate per-prompt word scores and test each word; sets ``lexicon_``."""
        normalise = word_normaliser(self.lemmatize)
        stop = stopword_set() if self.drop_stopwords else set()
        per_word: dict[str, list[float]] = defaultdict(list)
        lead_values: dict[str, list[float]] = defaultdict(list)
        content_votes: dict[str, list[bool]] = defaultdict(list)
        labels_seen: dict[str, set[str | None]] = defaultdict(set)
        word_data = has_tagger() or has_wordnet()
        for record in attributions:
            in_prompt: dict[str, float] = defaultdict(float)
            lead_key = None
            lead_index = _first_word_index(record.words)
            tags = universal_tags(record.words) if self.separate_content else None
            for position, (word, score) in enumerate(zip(record.words, record.scores, strict=True)):
                if not any(ch.isalnum() for ch in word):
                    continue
                key = normalise(word)
                if key in stop:
                    continue
                in_prompt[key] += score
                if position == lead_index:
                    lead_key = key
                    # A lead word is read as the request's verb, never as content.
                    content_votes[key].append(False)
                elif self.separate_content:
                    tag = tags[position] if tags is not None else None
                    content_votes[key].append(is_content_word(word, tag))
            for key, value in in_prompt.items():
                per_word[key].append(value)
                labels_seen[key].add(record.label)
                if key == lead_key:
                    lead_values[key].append(value)
        self.word_scores_ = {k: np.asarray(v) for k, v in per_word.items()}
        tested = sorted(k for k, v in self.word_scores_.items() if v.size >= self.min_support)
        rng = np.random.default_rng(self.seed)
        rows = []
        for word in tested:
            values = self.word_scores_[word]
            effect = float(values.mean())
            low, high = bootstrap_ci(values, self.confidence, self.n_bootstrap, rng)
            p_value = sign_flip_p_value(values, self.n_permutations, rng)
            sign = 1.0 if effect >= 0 else -1.0
            consistency = float(np.mean(np.sign(values) == sign))
            lead = lead_values.get(word, [])
            rows.append((word, effect, low, high, values.size, p_value, consistency, lead))
        q_values = benjamini_hochberg([r[5] for r in rows])
        margins = [a.margin for a in attributions if a.margin is not None]
        spread = float(np.std(margins)) if len(margins) > 1 else 0.0
        self.effect_floor_value_ = self.effect_floor * spread
        entries = []
        for (word, effect, low, high, support, p, consistency, lead), q in zip(
            rows, q_values, strict=True
        ):
            elsewhere = support - len(lead)
            lead_mean = float(np.mean(lead)) if lead else None
            total = float(self.word_scores_[word].sum())
            rest_mean = (total - sum(lead)) / elsewhere if elsewhere else None
            entries.append(
                LexiconEntry(
                    word=word,
                    direction="refusal" if effect > 0 else "compliance",
                    effect=effect,
                    ci_low=low,
                    ci_high=high,
                    support=int(support),
                    p_value=p,
                    q_value=float(q),
                    consistency=consistency,
                    role=_floor_role(
                        _role(content_votes.get(word, []), labels_seen[word], effect, word_data)
                        if self.separate_content
                        else "trigger",
                        effect,
                        self.effect_floor_value_,
                    ),
                    extra={
                        "lead_share": len(lead) / support,
                        "effect_lead": lead_mean,
                        "effect_elsewhere": rest_mean,
                    },
                )
            )
        entries.sort(key=_rank_key)
        self.lexicon_ = TriggerLexicon(
            entries=entries,
            source="model",
            meta={
                "method": sorted({a.method for a in attributions}),
                "n_prompts": len(attributions),
                "min_support": self.min_support,
                "ranking": "triggers, weak, then content words; conservative CI bound; |effect|",
                "effect_floor": self.effect_floor,
                "effect_floor_value": self.effect_floor_value_,
                "margin_spread": spread,
            },
        )
        self.n_prompts_ = len(attributions)
        return self


def _first_word_index(words: Sequence[str]) -> int:
    return next((i for i, w in enumerate(words) if any(ch.isalnum() for ch in w)), -1)


def _role(content_votes: list[bool], labels: set, effect: float, word_data: bool) -> str:
    """Whether a word is "content" (what requests are about) or a "trigger" candidate.

    With NLTK data: content when most of the word's occurrences are content words
    (``is_content_word``); an occurrence as the lead word counts as not content, so a trigger
    that mostly leads requests ("Share ...") stays a trigger even if one other use is a noun.
    Without NLTK data, the prompt labels stand in: a word that occurs under one label only and
    pushes the way that label warrants (toward refusal in harmful prompts only, toward
    compliance in benign ones only) shows no shortcut evidence and is treated as content. That
    misses a real trigger that only ever occurs in harmful prompts; the NLTK data avoids it.
    """
    if word_data:
        mostly_content = content_votes and sum(content_votes) * 2 > len(content_votes)
        return "content" if mostly_content else "trigger"
    warranted = {"harmful"} if effect > 0 else {"benign"}
    return "content" if labels == warranted else "trigger"


def _floor_role(role: str, effect: float, floor: float) -> str:
    """A trigger candidate whose |effect| is under the practical-significance floor is weak."""
    return "weak" if role == "trigger" and abs(effect) < floor else role


_ROLE_ORDER = {"trigger": 0, "weak": 1, "content": 2}


def _rank_key(entry: LexiconEntry) -> tuple:
    """Directions apart, triggers, then weak words, then content words, then the CI bound
    nearest zero, then |effect| (both descending)."""
    if entry.direction == "refusal":
        conservative = entry.ci_low
    else:
        conservative = -entry.ci_high
    return (
        entry.direction != "refusal",
        _ROLE_ORDER.get(str(entry.role), 0),
        -conservative,
        -abs(entry.effect),
        entry.word,
    )


def build_lexicon(attributions: Sequence[WordAttribution], **params) -> TriggerLexicon:
    """Convenience: ``LexiconBuilder(**params).fit(attributions).lexicon_``."""
    return LexiconBuilder(**params).fit(attributions).lexicon_
