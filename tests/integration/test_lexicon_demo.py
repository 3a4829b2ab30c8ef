"""Lexicon statistics on the demo model, and model triggers vs the demo's data cues."""

from __future__ import annotations

import pytest

from probe.attribution import get_attributor
from probe.demos.text import NEUTRAL_LEADS, TRIGGERS, demo_prompts, demo_training_prompts
from probe.lexicon.builder import LexiconBuilder
from probe.lexicon.cues import DataCueMiner
from probe.lexicon.table import LexiconEntry, TriggerLexicon, compare_lexicons


@pytest.fixture(scope="module")
def demo_attributions(demo_subject):
    return get_attributor("occlusion").attribute(demo_subject, demo_prompts(0))


@pytest.fixture(scope="module")
def demo_lexicon(demo_attributions):
    return LexiconBuilder(seed=0).fit(demo_attributions).lexicon_


def test_planted_triggers_rank_first_and_are_significant(demo_lexicon):
    for direction, word in TRIGGERS.items():
        entry = demo_lexicon.ranked(direction)[0]
        assert entry.word == word
        assert entry.q_value < 0.01
        assert entry.extra["lead_share"] == 1.0  # the demo plants them as lead words


def test_words_without_a_planted_effect_are_not_significant(demo_lexicon):
    # The neutral lead words fill the same slot as the triggers; "quickly" occurs about as
    # often as the triggers do (30 vs 32 prompts).
    neutral = [demo_lexicon.get(word) for word in (*NEUTRAL_LEADS, "quickly")]
    assert all(entry is not None for entry in neutral)
    assert demo_lexicon.get("quickly").support >= 0.8 * demo_lexicon.get("share").support
    for entry in neutral:
        assert entry.q_value > 0.05, entry.word


def test_same_seed_same_lexicon(demo_attributions, demo_lexicon):
    again = LexiconBuilder(seed=0).fit(demo_attributions).lexicon_
    assert [e.to_record() for e in again.entries] == [e.to_record() for e in demo_lexicon.entries]


def test_model_triggers_match_the_demo_data_cues(demo_lexicon):
    train = demo_training_prompts(0)
    cues = DataCueMiner().fit([p.prompt for p in train], [p.label for p in train]).lexicon_
    comparison = compare_lexicons(demo_lexicon, cues, k=5)
    for direction, word in TRIGGERS.items():
        assert comparison["top"][direction]["model"][0] == word
        assert comparison["top"][direction]["data"][0] == word
        assert word in comparison["top"][direction]["shared"]
    assert comparison["rank_correlation"] > 0


def _entry(word: str, effect: float, role: str = "trigger") -> LexiconEntry:
    direction = "refusal" if effect > 0 else "compliance"
    return LexiconEntry(word, direction, effect, effect, effect, 5, 0.01, 0.01, role=role)


def test_compare_lexicons_by_hand():
    model = TriggerLexicon(
        [
            _entry("share", 3.0),
            _entry("bomb", 2.0, "content"),
            _entry("please", 1.0),
            _entry("what", -2.0),
            _entry("how", -1.0),
        ]
    )
    data = TriggerLexicon(
        [_entry("share", 5.0), _entry("bomb", 4.0), _entry("what", -6.0), _entry("can", -1.0)]
    )
    result = compare_lexicons(model, data, k=2)
    # model top-2 (content left out): refusal [share, please], compliance [what, how]
    assert result["top"]["refusal"] == {
        "model": ["share", "please"],
        "data": ["share", "bomb"],
        "shared": ["share"],
    }
    assert result["overlap_at_k"] == {"refusal": 0.5, "compliance": 0.5}
    # common words (content excluded from the model side): share, what -> too few for rho
    assert result["n_common_words"] == 2
    assert result["rank_correlation"] is None
    data.entries.append(_entry("please", 0.5))
    # share (3, 5), please (1, 0.5), what (-2, -6): same order on both sides -> rho = 1
    assert compare_lexicons(model, data, k=2)["rank_correlation"] == pytest.approx(1.0)


def test_without_nltk_data_labels_keep_content_words_apart(demo_attributions, monkeypatch):
    import probe.lexicon.builder as lexicon_module

    monkeypatch.setattr(lexicon_module, "has_tagger", lambda: False)
    monkeypatch.setattr(lexicon_module, "has_wordnet", lambda: False)
    monkeypatch.setattr(lexicon_module, "universal_tags", lambda words: None)
    monkeypatch.setattr(lexicon_module, "is_content_word", lambda word, tag: False)
    lexicon = LexiconBuilder(seed=0, lemmatize=False).fit(demo_attributions).lexicon_
    for direction, word in TRIGGERS.items():
        assert lexicon.ranked(direction)[0].word == word
    assert lexicon.get("bomb").role == "content"  # harmful prompts only, refusal


def test_a_word_that_mostly_leads_stays_a_trigger_despite_one_noun_use():
    from probe.attribution import WordAttribution
    from probe.words import split_words

    texts = [f"Share the {w} now" for w in ("plan", "photo", "story", "news")]
    texts.append("Give me your share of the money")  # "share" as a noun, not leading
    records = []
    for i, text in enumerate(texts):
        words = [w.text for w in split_words(text)]
        scores = [1.0 if w.lower() == "share" else 0.0 for w in words]
        records.append(WordAttribution(str(i), text, "benign", words, [], scores, 1.0, "test"))
    lexicon = LexiconBuilder(min_support=2).fit(records).lexicon_
    assert lexicon.get("share").role == "trigger"
