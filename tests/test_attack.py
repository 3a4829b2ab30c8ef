"""One-word attack on the demo model: verified flips, one-word edits, budget, degradation."""

from __future__ import annotations

import pytest

import probe.attack as attack_module
from probe.attack import OneWordAttack, write_flip_rates
from probe.attribution import get_attributor
from probe.demo import TRIGGERS, demo_prompts
from probe.judge import RefusalJudge
from probe.lexicon import LexiconBuilder
from probe.nlp import inflect_like, is_content_word, wordnet_synonyms
from probe.words import split_words


@pytest.fixture(scope="module")
def demo_setup(demo_subject):
    prompts = demo_prompts(0, per_group=4)
    judge = RefusalJudge.default()
    responses = demo_subject.generate([p.prompt for p in prompts], 16)
    refused = {p.id: judge.is_refusal(r) for p, r in zip(prompts, responses, strict=True)}
    attributions = get_attributor("occlusion").attribute(demo_subject, prompts)
    lexicon = LexiconBuilder(n_bootstrap=200, n_permutations=500).fit(attributions).lexicon_
    return demo_subject, judge, lexicon, prompts, attributions, refused


def _run(demo_setup, **params):
    subject, judge, lexicon, prompts, attributions, refused = demo_setup
    return OneWordAttack(max_new_tokens=16, **params).run(
        subject, judge, lexicon, prompts, attributions, refused
    )


@pytest.fixture(scope="module")
def guided(demo_setup):
    """The default (guided) attack on the demo setup, run once for the module."""
    return _run(demo_setup)


def test_guided_attack_flips_demo_and_every_edit_is_one_word(demo_setup, guided):
    subject, judge, _, prompts, _, refused = demo_setup
    result = guided
    assert result.rate("compliance") >= 0.8
    assert result.rate("refusal") >= 0.8
    by_id = {p.id: p for p in prompts}
    for record in result.records:
        before = split_words(record.original)
        after = split_words(record.variant)
        assert len(before) == len(after)
        changed = [
            i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a.text != b.text
        ]
        assert changed == [record.position]
        assert record.original == by_id[record.id].prompt
        assert record.judged_refusal_before == refused[record.id]
    # Re-verify the flips independently: generate and judge again.
    flips = [r for r in result.records if r.flipped][:6]
    responses = subject.generate([r.variant for r in flips], 16)
    for record, response in zip(flips, responses, strict=True):
        assert judge.is_refusal(response) == (record.target == "refusal")
        assert judge.is_refusal(response) != record.judged_refusal_before


def test_planted_triggers_carry_the_flips(guided):
    words = {r.new_word.lower() for r in guided.records if r.flipped}
    assert TRIGGERS["compliance"] in words and TRIGGERS["refusal"] in words


def test_guided_search_needs_fewer_queries_than_exhaustive(demo_setup, guided):
    exhaustive = _run(demo_setup, search="exhaustive", max_verify=1000)
    assert len(guided.flipped_ids) >= 0.95 * len(exhaustive.flipped_ids)
    assert guided.queries_per_success * 3 < exhaustive.queries_per_success


def test_query_budget_bounds_margin_queries(demo_setup):
    result = _run(demo_setup, max_queries=1, max_verify=1)
    per_prompt = {r.id: r.queries for r in result.records}
    # one margin batch (one position) + at most one verification
    assert all(q <= 1 + 5 + 3 + 1 for q in per_prompt.values())


def test_nouns_are_never_replaced_except_the_lead(guided):
    for record in guided.records:
        lead = next(i for i, w in enumerate(split_words(record.original)) if not w.is_punct)
        assert record.position == lead or record.replaced_pos not in {"NOUN", "PROPN", "NUM"}


def test_flip_rates_written_back_with_wilson_interval(demo_setup, guided):
    _, _, lexicon, *_ = demo_setup
    write_flip_rates(lexicon, guided)
    entry = lexicon.get(TRIGGERS["compliance"])
    assert entry.flip_rate is not None and 0 < entry.flip_rate <= 1
    assert entry.flip_ci_low <= entry.flip_rate <= entry.flip_ci_high


def test_attack_without_nltk_data_uses_lexicon_only(demo_setup, monkeypatch):
    monkeypatch.setattr(attack_module, "has_tagger", lambda: False)
    monkeypatch.setattr(attack_module, "has_wordnet", lambda: False)
    monkeypatch.setattr(attack_module, "universal_tags", lambda words: None)
    monkeypatch.setattr(attack_module, "wordnet_synonyms", lambda word, tag=None: [])
    result = _run(demo_setup)
    assert any("WordNet" in note for note in result.notes)
    assert any("tagger" in note for note in result.notes)
    assert {r.source for r in result.records} == {"trigger"}
    assert result.rate("compliance") >= 0.8


def test_inflection_and_synonyms():
    assert inflect_like("share", "posts", "VERB") == "shares"
    assert inflect_like("share", "posted", "VERB") == "shared"
    assert inflect_like("share", "posting", "VERB") == "sharing"
    assert inflect_like("what", "posts", "VERB") == "what"  # not a verb: left alone
    assert inflect_like("share", "Explain", "VERB") == "share"  # already a lemma
    assert "rapidly" in wordnet_synonyms("quickly", "ADV")
    assert wordnet_synonyms("the", "DET") == []


def test_content_words_are_recognised_despite_tagger_misreadings():
    # The tagger reads "make malware" as an adjective and "bake bread" as a verb.
    for word, tag in [("malware", "ADJ"), ("bread", "VERB"), ("bomb", "VERB"), ("home", "ADV")]:
        assert is_content_word(word, tag), word
    for word, tag in [("share", "VERB"), ("make", "VERB"), ("what", "PRON"), ("quickly", "ADV")]:
        assert not is_content_word(word, tag), word
    assert is_content_word("share", "NOUN")  # the tag still decides when it says noun
