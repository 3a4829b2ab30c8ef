"""NLTK-backed word helpers (lemmas, stopwords, part of speech).

probe ships the NLTK data it needs (``probe/nltk_data``: WordNet 3.0, English stopwords, the
perceptron POS tagger and the universal tagset; provenance and licences beside them), so a fresh
install has every feature offline. NLTK searches the user's own ``NLTK_DATA`` and its default
folders first, then the shipped copy. probe never downloads at run time: if a resource is still
missing (someone deleted it), it warns once, naming the resource, and falls back (no lemmas, no
stopwords, no tags).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

SHIPPED_NLTK_DATA = Path(__file__).resolve().parent / "nltk_data"


@functools.cache
def _nltk():
    """The ``nltk`` module, with probe's shipped data folder last on its search path."""
    import nltk

    if SHIPPED_NLTK_DATA.is_dir() and str(SHIPPED_NLTK_DATA) not in nltk.data.path:
        nltk.data.path.append(str(SHIPPED_NLTK_DATA))
    return nltk


def import_nltk() -> None:
    """Import NLTK now, on this thread. Its import pulls in scipy and scikit-learn; a thread
    importing it while another imports those can be handed half-initialised modules (Python's
    import deadlock guard), which breaks ``nltk`` for the rest of the process."""
    _nltk()


RESOURCES = {
    "wordnet": "corpora/wordnet",
    "stopwords": "corpora/stopwords",
    "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng",
    "universal_tagset": "taggers/universal_tagset",
}


def wordnet_corpus():
    """NLTK's WordNet reader, searching the shipped data too (check ``has_wordnet`` first)."""
    return _nltk().corpus.wordnet


@functools.cache
def missing_resources() -> frozenset[str]:
    """The NLTK resources probe uses that cannot be found; warns once, listing them all."""
    nltk = _nltk()
    missing = set()
    for name, locator in RESOURCES.items():
        for candidate in (locator, locator + ".zip"):
            try:
                nltk.data.find(candidate)
                break
            except LookupError:
                continue
        else:
            missing.add(name)
    if missing:
        warnings.warn(
            f"NLTK data not found: {', '.join(sorted(missing))}; probe continues without it "
            f"(fewer features). It ships in {SHIPPED_NLTK_DATA}: reinstall probe, or point "
            "NLTK_DATA at a folder that holds it",
            stacklevel=3,
        )
    return frozenset(missing)


def has_wordnet() -> bool:
    return "wordnet" not in missing_resources()


def has_tagger() -> bool:
    return not {"averaged_perceptron_tagger_eng", "universal_tagset"} & missing_resources()


@functools.cache
def stopword_set() -> frozenset[str]:
    """English stopwords (NLTK), or an empty set when the corpus is missing."""
    if "stopwords" in missing_resources():
        return frozenset()
    stopwords = _nltk().corpus.stopwords

    return frozenset(stopwords.words("english"))


@functools.cache
def lemma(word: str) -> str:
    """Context-free WordNet base form of a lower-case word: verb lemma if any, else noun lemma.

    ``morphy`` returns the word itself first when it already is a lemma, so "as", "us" and
    "species" stay (``WordNetLemmatizer`` would give "a", "u", "specie"), and verbs first turn
    "was"/"has"/"does" into "be"/"have"/"do" rather than the noun misreadings "wa"/"ha"/"doe".
    The cost is that noun-verb homographs take the verb form ("building" -> "build"). No POS
    tagging, so the same surface word always gets the same lemma (model and data cues agree).
    """
    wordnet = _nltk().corpus.wordnet

    return wordnet.morphy(word, wordnet.VERB) or wordnet.morphy(word, wordnet.NOUN) or word


def word_normaliser(lemmatize: bool = True) -> Callable[[str], str]:
    """Lower-case, then ``lemma`` when asked and WordNet is available (else lower-case only)."""
    if not (lemmatize and has_wordnet()):
        return str.lower
    return lambda word: lemma(word.lower())


def universal_tags(words: Sequence[str]) -> list[str] | None:
    """Universal POS tags for a word sequence, or None when the tagger data is missing."""
    tagged = tag_both(words)
    return None if tagged is None else tagged[0]


def penn_tags(words: Sequence[str]) -> list[str] | None:
    """Penn Treebank tags (the tagger's own, finer than universal: WP vs PRP, VBZ vs VB), or
    None when the tagger data is missing."""
    tagged = tag_both(words)
    return None if tagged is None else tagged[1]


def tag_both(words: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """(universal, Penn) tags from one tagger pass (universal tags are mapped from Penn, as
    ``nltk.pos_tag(..., tagset="universal")`` does), or None without the tagger data."""
    if not has_tagger():
        return None
    nltk = _nltk()
    penn = [tag for _, tag in nltk.pos_tag(list(words))]
    return [nltk.tag.map_tag("en-ptb", "universal", tag) for tag in penn], penn


CONTENT_TAGS = frozenset({"NOUN", "PROPN", "NUM"})


def is_content_word(word: str, universal_tag: str | None) -> bool:
    """Whether a word carries what a request is about, so an edit must not replace it.

    True for nouns, proper nouns and numbers by the tagger, and — because the tagger misreads
    short imperative requests ("make malware" -> ADJ, "bake bread" -> VERB) — for words that
    WordNet does not know at all (jargon such as "malware") or whose senses are used as a noun
    at least as often as any other part of speech (SemCor lemma counts: "bread", "bomb", not
    "make" or "share"). Stopwords are never content. Without WordNet only the tag decides.
    """
    if universal_tag in CONTENT_TAGS:
        return True
    lower = word.lower()
    if lower in stopword_set() or not any(ch.isalpha() for ch in lower) or not has_wordnet():
        return False
    return _dominant_pos(lower) in (None, "n")


@functools.cache
def _dominant_pos(word: str) -> str | None:
    """WordNet part of speech whose senses of ``word`` are used most (SemCor counts; a tie
    goes to the noun), or None when WordNet does not know the word."""
    wordnet = _nltk().corpus.wordnet

    usage: dict[str, float] = {}
    for synset in wordnet.synsets(word):
        pos = "a" if synset.pos() == "s" else synset.pos()
        for lemma_ in synset.lemmas():
            if lemma_.name().lower() == word:
                usage[pos] = usage.get(pos, 0.0) + lemma_.count() + 0.01
    if not usage:
        return None
    best = max(usage.values())
    return "n" if usage.get("n") == best else max(usage, key=lambda pos: usage[pos])


_WORDNET_POS = {"VERB": "v", "NOUN": "n", "ADJ": "a", "ADV": "r"}


def wordnet_synonyms(word: str, universal_tag: str | None = None) -> list[str]:
    """Single-word WordNet synonyms of ``word`` with the same part of speech, most common
    sense first; empty when WordNet is missing or the tag has no WordNet counterpart."""
    if not has_wordnet():
        return []
    wordnet = _nltk().corpus.wordnet

    pos = _WORDNET_POS.get(universal_tag or "")
    if universal_tag is not None and pos is None:
        return []
    names: list[str] = []
    for synset in wordnet.synsets(word.lower(), pos=pos):
        for name in synset.lemma_names():
            if "_" not in name and name.lower() != word.lower() and name not in names:
                names.append(name)
    return names


def inflect_like(new: str, old: str, universal_tag: str | None = None) -> str:
    """``new`` inflected like ``old`` ("shares", "shared", "sharing"; "wrote" -> "shared").

    Uses ``lemminflect`` (irregular forms included): only when ``old`` is tagged a verb or noun,
    is an inflected form of its lemma, and ``new`` has that part of speech too; else ``new``
    unchanged.
    """
    if universal_tag not in ("VERB", "NOUN"):
        return new
    import lemminflect

    lower = old.lower()
    lemmas = lemminflect.getAllLemmas(lower).get(universal_tag)
    new_lemmas = lemminflect.getAllLemmas(new.lower()).get(universal_tag)
    if not lemmas or not new_lemmas or lemmas[0] == lower:
        return new
    base_tags = ("VB", "VBP", "NN")
    for penn, forms in lemminflect.getAllInflections(lemmas[0], universal_tag).items():
        if penn not in base_tags and lower in forms:
            inflected = lemminflect.getInflection(new_lemmas[0], penn)
            return inflected[0] if inflected else new
    return new
