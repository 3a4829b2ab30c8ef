"""Data-level cue mining: which words skew a labelled fine-tuning set toward refusal or compliance.

The Safety Mirage hypothesis is that a safety-tuned model learns its data's surface cues (VLGuard's
unsafe queries often begin "Share…", its safe ones "What…"). ``DataCueMiner`` measures those cues
in the data itself, so they can be set beside the model's attributed triggers: the weighted
log-odds ratio with an informative Dirichlet prior of Monroe, Colaresi & Quinn (2008, "Fightin'
Words"), per word, between refusal-labelled and compliance-labelled prompts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, cast

import numpy as np

from probe.data import load_prompts, normalise_label
from probe.errors import ProbeError
from probe.lexicon.stats import benjamini_hochberg
from probe.lexicon.table import LexiconEntry, TriggerLexicon
from probe.nlp import has_wordnet, stopword_set
from probe.nlp import lemma as nlp_lemma
from probe.words import split_words

View = Literal["any", "first"]
VIEWS: tuple[View, View] = ("any", "first")
CLASSES = ("refusal", "compliance")  # column order of the count arrays
_Z95 = 1.959963984540054  # two-sided 95% normal quantile


def word_tokens(text: str) -> list[str]:
    """The lower-cased words of ``text``, in order, for counting.

    Word boundaries are those of ``probe.words.split_words`` (runs of word characters with inner
    apostrophes/hyphens: "what's", "e-mail"), so data cues and the model's attributed words
    split a prompt identically and can be compared word for word. Punctuation runs and words
    without a letter (numbers) are dropped; a typographic apostrophe is read as "'".
    """
    words = (w.text.lower().replace("\u2019", "'") for w in split_words(text))
    return [w for w in words if any(ch.isalpha() for ch in w)]


class DataCueMiner:
    """Rank the words of a labelled prompt set by how strongly they skew toward refusal labels.

    Parameters
    ----------
    view
        ``"any"``: a word counts once for every prompt that contains it anywhere (document
        frequency). Queries are short and a repeated word ("share … share") says no more about
        the label than one occurrence, so presence is the unit; it also makes a word's count
        equal its support (prompts containing it). ``"first"``: only the first word of each
        prompt counts, so counts are the number of prompts that begin with the word, which is
        the lead-word shortcut of the Safety Mirage paper. A prompt with no words counts for
        nothing in either view.
    prior_scale
        alpha_0, the total strength of the informative Dirichlet prior. The prior for a word is
        its share of the pooled (both-class) counts times alpha_0, so the prior pulls every word
        toward the corpus-wide rate and a rare word cannot reach a large z on a handful of
        prompts. Larger values shrink the log-odds more.
    min_count
        Words with fewer counted prompts (both classes together) are left out of the table and
        of the q-value adjustment. They still enter the class totals and the prior.
    stopwords
        Drop NLTK's English stopwords before counting. Off by default: the interrogatives the
        paper found ("what", "how") are stopwords. In the first-word view a prompt whose first
        word is a stopword then counts for nothing. Without NLTK's stopword data, warn and keep
        them.
    lemmatize
        Map each word to a WordNet base form (``probe.nlp.lemma``) so inflections pool ("shares",
        "sharing" -> "share"). Off by default: the model sees surface words. Without WordNet
        data, warn and count surface words.

    Fitted attributes (rows follow ``vocabulary_``; columns of 2-D arrays follow ``CLASSES``)
    ------------------------------------------------------------------------------------------
    vocabulary_ : dict word -> row, alphabetical, words with at least ``min_count`` prompts
    counts_ : int array (n_words, 2), counted prompts per class
    prior_ : the per-word prior a_w
    class_totals_ : int array (2,), n_r and n_c: all counts per class (whole vocabulary)
    n_prompts_ : int array (2,), labelled prompts per class
    log_odds_, variance_, z_scores_, p_values_, q_values_ : float arrays (n_words,)
    stopwords_removed_, lemmatized_ : whether those options could be applied
    lexicon_ : ``TriggerLexicon`` (source "data"), ranked by |z| within each direction
    """

    def __init__(
        self,
        view: View = "any",
        prior_scale: float = 500.0,
        min_count: int = 5,
        stopwords: bool = False,
        lemmatize: bool = False,
    ) -> None:
        self.view = view
        self.prior_scale = prior_scale
        self.min_count = min_count
        self.stopwords = stopwords
        self.lemmatize = lemmatize

    def fit(self, texts: Sequence[str], labels: Sequence[str | None]) -> DataCueMiner:
        """Count words per class and score each one; ``labels`` are refusal/compliance.

        harmful/benign and unsafe/safe (any case) are accepted as refusal/compliance.
        """
        self._check_params()
        if len(texts) != len(labels):
            raise ProbeError(f"cue mining got {len(texts)} texts but {len(labels)} labels")
        classes = [_class_of(label, f"label {i}") for i, label in enumerate(labels, 1)]
        self.n_prompts_ = np.array([classes.count(c) for c in CLASSES])
        if not self.n_prompts_.all():
            raise ProbeError(
                "cue mining needs both refusal- and compliance-labelled prompts; got "
                f"{self.n_prompts_[0]} refusal and {self.n_prompts_[1]} compliance"
            )
        counts = self._count(texts, classes)
        words = sorted(counts)
        if len(words) < 2:
            raise ProbeError(f"cue mining needs at least two distinct words; got {words}")
        y = np.array([[counts[w][c] for c in CLASSES] for w in words], dtype=np.int64)
        pooled = y.sum(axis=1)
        self.class_totals_ = y.sum(axis=0)
        for cls, total in zip(CLASSES, self.class_totals_, strict=True):
            if not total:
                raise ProbeError(f"cue mining counted no words in the {cls} prompts ({self._unit})")
        keep = pooled >= self.min_count
        self.vocabulary_ = {w: i for i, w in enumerate(np.asarray(words)[keep].tolist())}
        self.counts_ = y[keep]
        self.prior_ = self.prior_scale * pooled[keep] / pooled.sum()
        self.log_odds_, self.variance_ = _log_odds(
            self.counts_, self.prior_, self.class_totals_, self.prior_scale
        )
        self.z_scores_ = self.log_odds_ / np.sqrt(self.variance_)
        self.p_values_ = np.array([math.erfc(abs(z) / math.sqrt(2)) for z in self.z_scores_])
        self.q_values_ = benjamini_hochberg(self.p_values_)
        self.lexicon_ = self._lexicon()
        return self

    def get_feature_names_out(self) -> np.ndarray:
        """The vocabulary as an array, in row order (scikit-learn's name for it)."""
        return np.array(list(self.vocabulary_), dtype=object)

    @property
    def _unit(self) -> str:
        """What one count is, in words, for messages and the lexicon's metadata."""
        stop = ", stopwords dropped" if self.stopwords_removed_ else ""
        if self.view == "first":
            return f"prompts beginning with the word{stop}"
        return f"prompts containing the word{stop}"

    def _check_params(self) -> None:
        if self.view not in VIEWS:
            raise ProbeError(f"view must be one of {', '.join(VIEWS)}, not {self.view!r}")
        if not self.prior_scale > 0:
            raise ProbeError(f"prior_scale must be positive, got {self.prior_scale}")
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int):
            raise ProbeError(f"min_count must be an integer, got {self.min_count!r}")

    def _count(self, texts: Sequence[str], classes: Sequence[str]) -> dict[str, Counter[str]]:
        """Per word, the number of prompts of each class that count it (see ``view``)."""
        stop = stopword_set() if self.stopwords else None
        lemma = nlp_lemma if self.lemmatize and has_wordnet() else None
        self.stopwords_removed_ = bool(stop)
        self.lemmatized_ = lemma is not None
        counts: dict[str, Counter[str]] = {}
        for text, cls in zip(texts, classes, strict=True):
            words = word_tokens(text)
            if self.view == "first":
                words = words[:1]
            if stop:
                words = [w for w in words if w not in stop]
            if lemma is not None:
                words = [lemma(w) for w in words]
            for word in set(words):
                counts.setdefault(word, Counter())[cls] += 1
        return counts

    def _lexicon(self) -> TriggerLexicon:
        """The fitted table: positive log-odds -> refusal, negative -> compliance, |z| order.

        Words with exactly zero log-odds have no direction and are left out. Ties in |z| are
        broken alphabetically so the table does not depend on input order.
        """
        entries = []
        for word, i in self.vocabulary_.items():
            delta, half = float(self.log_odds_[i]), _Z95 * math.sqrt(self.variance_[i])
            if delta == 0:
                continue
            entries.append(
                LexiconEntry(
                    word=word,
                    direction="refusal" if delta > 0 else "compliance",
                    effect=delta,
                    ci_low=delta - half,
                    ci_high=delta + half,
                    support=int(self.counts_[i].sum()),
                    p_value=float(self.p_values_[i]),
                    q_value=float(self.q_values_[i]),
                    extra={
                        "z": float(self.z_scores_[i]),
                        "count_refusal": int(self.counts_[i, 0]),
                        "count_compliance": int(self.counts_[i, 1]),
                        "view": self.view,
                    },
                )
            )
        entries.sort(
            key=lambda e: (e.direction != "refusal", -abs(cast(float, e.extra["z"])), e.word)
        )
        meta = {
            "miner": "DataCueMiner",
            "statistic": "log-odds ratio, informative Dirichlet prior (Monroe et al. 2008)",
            "view": self.view,
            "unit": self._unit,
            "prior_scale": self.prior_scale,
            "min_count": self.min_count,
            "stopwords_removed": self.stopwords_removed_,
            "lemmatized": self.lemmatized_,
            "n_prompts": dict(zip(CLASSES, self.n_prompts_.tolist(), strict=True)),
            "class_totals": dict(zip(CLASSES, self.class_totals_.tolist(), strict=True)),
        }
        return TriggerLexicon(entries=entries, source="data", meta=meta)


def mine_dataset(
    path: str | Path, format: str | None = None, view: View = "any", **params
) -> TriggerLexicon:
    """Mine the cue lexicon of a labelled prompt file (any ``probe.data`` format).

    ``params`` go to ``DataCueMiner``. Every prompt must be labelled: an unlabelled one would
    silently shrink a class, so it is an error.
    """
    prompts = load_prompts(path, format=format)
    unlabelled = sum(p.label is None for p in prompts)
    if unlabelled:
        raise ProbeError(
            f"{path}: {unlabelled} of {len(prompts)} prompts have no label; cue mining needs "
            "every prompt labelled harmful/benign"
        )
    miner = DataCueMiner(view=view, **params)
    lexicon = miner.fit([p.prompt for p in prompts], [p.label for p in prompts]).lexicon_
    lexicon.meta.update(dataset=Path(path).name, format=format)
    return lexicon


def _class_of(label: object, where: str) -> str:
    """ "refusal" or "compliance" for a label word or its aliases; anything else is an error."""
    normal = normalise_label(label, where)
    if normal is None:
        raise ProbeError(f"{where}: missing label; cue mining needs every prompt labelled")
    return "refusal" if normal == "harmful" else "compliance"


def _log_odds(
    y: np.ndarray, prior: np.ndarray, totals: np.ndarray, alpha0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Monroe et al.'s delta (refusal minus compliance log-odds) and its approximate variance."""
    y_r, y_c = y[:, 0] + prior, y[:, 1] + prior
    n_r, n_c = totals + alpha0
    delta = np.log(y_r / (n_r - y_r)) - np.log(y_c / (n_c - y_c))
    return delta, 1.0 / y_r + 1.0 / y_c
