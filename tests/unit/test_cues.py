"""Data-level cue miner: hand-computed statistics, views, ranking, options, and VLGuard's cues."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from statistics import NormalDist

import numpy as np
import pytest
from paths import REPO

from probe.errors import ProbeError
from probe.lexicon.cues import DataCueMiner, mine_dataset, word_tokens
from probe.lexicon.table import TriggerLexicon

VLGUARD_TRAIN = REPO.parent / "shared" / "data" / "vlguard" / "train.json"

# Any-position fixture. Document-frequency units per prompt:
#   refusal {share, it}, {share, now}; compliance {what, now}, {what, is, it}
# so y_r: share 2, it 1, now 1 (n_r = 4); y_c: what 2, now 1, is 1, it 1 (n_c = 5);
# pooled: share 2, it 2, now 2, what 2, is 1 (total 9). With alpha_0 = 9, a_w = pooled count.
ANY_TEXTS = ["share it share", "Share now.", "What now?", "what is it"]
ANY_LABELS = ["refusal", "refusal", "compliance", "compliance"]


def _normal_p(z: float) -> float:
    return 2 * (1 - NormalDist().cdf(abs(z)))


def test_word_tokens_lowercases_and_keeps_inner_apostrophes_and_hyphens():
    text = "What's the e-mail of Bob’s 2 friends?!"
    assert word_tokens(text) == ["what's", "the", "e-mail", "of", "bob's", "friends"]


def test_any_view_matches_hand_computed_log_odds():
    miner = DataCueMiner(view="any", prior_scale=9, min_count=1).fit(ANY_TEXTS, ANY_LABELS)
    assert list(miner.class_totals_) == [4, 5]
    assert list(miner.n_prompts_) == [2, 2]
    expected = {
        # word: (y_r, y_c, delta by hand, variance by hand)
        "share": (2, 0, math.log(4 / 9) - math.log(2 / 12), 1 / 4 + 1 / 2),
        "what": (0, 2, math.log(2 / 11) - math.log(4 / 10), 1 / 2 + 1 / 4),
        "now": (1, 1, math.log(3 / 10) - math.log(3 / 11), 1 / 3 + 1 / 3),
        "it": (1, 1, math.log(3 / 10) - math.log(3 / 11), 1 / 3 + 1 / 3),
        "is": (0, 1, math.log(1 / 12) - math.log(2 / 12), 1 / 1 + 1 / 2),
    }
    assert sorted(miner.vocabulary_) == sorted(expected)
    for word, (y_r, y_c, delta, var) in expected.items():
        i = miner.vocabulary_[word]
        z = delta / math.sqrt(var)
        assert list(miner.counts_[i]) == [y_r, y_c]  # "share" twice in one prompt counts once
        assert miner.log_odds_[i] == pytest.approx(delta)
        assert miner.variance_[i] == pytest.approx(var)
        assert miner.z_scores_[i] == pytest.approx(z)
        assert miner.p_values_[i] == pytest.approx(_normal_p(z))
        entry = miner.lexicon_.get(word)
        assert entry.effect == pytest.approx(delta)
        assert entry.ci_low == pytest.approx(delta - 1.959964 * math.sqrt(var))
        assert entry.ci_high == pytest.approx(delta + 1.959964 * math.sqrt(var))
        assert entry.support == y_r + y_c
        assert entry.extra["z"] == pytest.approx(z)
        assert (entry.extra["count_refusal"], entry.extra["count_compliance"]) == (y_r, y_c)
        assert entry.extra["view"] == "any"
    # BH by hand: sorted p are share < what < is < it == now (m = 5), each q the running minimum
    # from the largest rank down of p * m / rank.
    p = {w: _normal_p(e[2] / math.sqrt(e[3])) for w, e in expected.items()}
    q_now = min(p["now"] * 5 / 5, p["it"] * 5 / 4)
    q_is = min(p["is"] * 5 / 3, q_now)
    q_what = min(p["what"] * 5 / 2, q_is)
    q_share = min(p["share"] * 5 / 1, q_what)
    for word, q in {"share": q_share, "what": q_what, "is": q_is, "now": q_now}.items():
        assert miner.lexicon_.get(word).q_value == pytest.approx(q)


def test_first_view_counts_only_the_first_word_of_each_prompt():
    texts = ["Share this image", "Share the secret!", "Explain how to hack"]
    texts += ["What is this?", "What colour is the car", "Explain the image"]
    labels = ["harmful"] * 3 + ["benign"] * 3
    miner = DataCueMiner(view="first", prior_scale=3, min_count=1).fit(texts, labels)
    assert sorted(miner.vocabulary_) == ["explain", "share", "what"]
    assert list(miner.class_totals_) == [3, 3]
    # pooled counts 2, 2, 2 of 6 -> a_w = 3 * 2 / 6 = 1 for each word, alpha_0 = 3.
    share = miner.lexicon_.get("share")
    delta = math.log((2 + 1) / (3 + 3 - 2 - 1)) - math.log((0 + 1) / (3 + 3 - 0 - 1))
    assert share.effect == pytest.approx(delta)
    assert share.extra["z"] == pytest.approx(delta / math.sqrt(1 / 3 + 1 / 1))
    assert (share.support, share.extra["count_refusal"], share.extra["count_compliance"]) == (
        2,
        2,
        0,
    )
    assert miner.lexicon_.get("what").effect == pytest.approx(-delta)
    # "explain" leads one prompt of each class: zero log-odds, so no direction and no entry.
    assert miner.log_odds_[miner.vocabulary_["explain"]] == pytest.approx(0)
    assert miner.lexicon_.get("explain") is None
    assert miner.lexicon_.meta["view"] == "first"


def test_ranking_is_by_z_magnitude_within_direction_with_alphabetical_ties():
    lexicon = DataCueMiner(prior_scale=9, min_count=1).fit(ANY_TEXTS, ANY_LABELS).lexicon_
    assert lexicon.source == "data"
    assert lexicon.top("refusal") == ["share", "it", "now"]  # it, now: equal z
    assert lexicon.top("compliance") == ["what", "is"]
    assert [e.direction for e in lexicon.entries] == ["refusal"] * 3 + ["compliance"] * 2


def test_min_count_filters_the_table_but_not_the_class_totals():
    full = DataCueMiner(prior_scale=9, min_count=1).fit(ANY_TEXTS, ANY_LABELS)
    cut = DataCueMiner(prior_scale=9, min_count=2).fit(ANY_TEXTS, ANY_LABELS)
    assert "is" not in cut.vocabulary_ and "is" in full.vocabulary_
    assert list(cut.class_totals_) == list(full.class_totals_)
    i, j = cut.vocabulary_["share"], full.vocabulary_["share"]
    assert cut.log_odds_[i] == pytest.approx(full.log_odds_[j])


def test_label_aliases_give_the_same_lexicon():
    def records(labels: list[str]) -> list[dict]:
        miner = DataCueMiner(prior_scale=9, min_count=1).fit(ANY_TEXTS, labels)
        return [e.to_record() for e in miner.lexicon_.entries]

    reference = records(ANY_LABELS)
    assert records(["harmful", "harmful", "benign", "benign"]) == reference
    assert records(["Unsafe", "unsafe", "SAFE", "safe"]) == reference


@pytest.mark.parametrize(
    ("texts", "labels", "params", "message"),
    [
        (["a b"], ["refusal", "compliance"], {}, "1 texts but 2 labels"),
        (["a b", "c d"], ["refusal", "maybe"], {}, "unknown label"),
        (["a b", "c d"], ["refusal", None], {}, "missing label"),
        (["a b", "c d"], ["refusal", "refusal"], {}, "both refusal- and compliance"),
        (["a", "a"], ["refusal", "compliance"], {"min_count": 1}, "two distinct words"),
        (["a b", "c d"], ["refusal", "compliance"], {"view": "last"}, "view must be"),
        (["a b", "c d"], ["refusal", "compliance"], {"prior_scale": 0}, "prior_scale"),
    ],
)
def test_bad_input_is_a_one_line_probe_error(texts, labels, params, message):
    with pytest.raises(ProbeError, match=message):
        DataCueMiner(**params).fit(texts, labels)


def test_same_input_in_any_order_gives_the_same_lexicon():
    rng = random.Random(0)
    words = ["share", "what", "explain", "describe", "how", "image", "person", "tell"]
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 6))) for _ in range(200)]
    labels = [rng.choice(["refusal", "compliance"]) for _ in texts]
    order = list(range(len(texts)))
    rng.shuffle(order)

    def records(idx: list[int]) -> list[dict]:
        miner = DataCueMiner(prior_scale=50, min_count=1)
        miner.fit([texts[i] for i in idx], [labels[i] for i in idx])
        return [e.to_record() for e in miner.lexicon_.entries]

    reference = records(list(range(len(texts))))
    assert records(list(range(len(texts)))) == reference
    assert records(order) == reference


def test_stopwords_option_drops_stopwords_and_stopword_led_prompts():
    texts = ["Share the photo", "Describe this person", "What is the colour", "How tall is it"]
    labels = ["refusal", "refusal", "compliance", "compliance"]
    miner = DataCueMiner(min_count=1, stopwords=True).fit(texts, labels)
    assert miner.stopwords_removed_ and miner.lexicon_.meta["stopwords_removed"]
    assert sorted(miner.vocabulary_) == ["colour", "describe", "person", "photo", "share", "tall"]
    # First-word view: a prompt led by a stopword counts for nothing.
    with pytest.raises(ProbeError, match="no words in the compliance prompts"):
        DataCueMiner(view="first", min_count=1, stopwords=True).fit(texts, labels)
    first = DataCueMiner(view="first", min_count=1, stopwords=True)
    first.fit([*texts, "Colour of the sky?"], [*labels, "compliance"])
    assert sorted(first.vocabulary_) == ["colour", "describe", "share"]
    assert list(first.class_totals_) == [2, 1]


def test_lemmatize_option_pools_inflections():
    texts = ["Shares the file", "Sharing the photo", "Share it", "What was it", "What is this"]
    labels = ["refusal"] * 3 + ["compliance"] * 2
    miner = DataCueMiner(view="first", min_count=1, lemmatize=True).fit(texts, labels)
    assert miner.lemmatized_
    assert list(miner.counts_[miner.vocabulary_["share"]]) == [3, 0]
    any_view = DataCueMiner(min_count=1, lemmatize=True).fit(texts, labels)
    assert list(any_view.counts_[any_view.vocabulary_["be"]]) == [0, 2]  # was, is
    assert "wa" not in any_view.vocabulary_ and "as" not in any_view.vocabulary_


def test_missing_nltk_data_warns_and_degrades():
    script = """
import json, warnings, nltk
from pathlib import Path
import probe.nlp
nltk.data.path.clear()
probe.nlp.SHIPPED_NLTK_DATA = Path("/nonexistent/nltk_data")  # as if a user deleted it
from probe.lexicon.cues import DataCueMiner
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    m = DataCueMiner(min_count=1, stopwords=True, lemmatize=True).fit(
        ["Shares it", "What is it"], ["refusal", "compliance"])
print(json.dumps({"warnings": [str(w.message) for w in caught], "words": sorted(m.vocabulary_),
                  "stop": m.stopwords_removed_, "lemma": m.lemmatized_}))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    result = json.loads(done.stdout)
    assert result["words"] == ["is", "it", "shares", "what"]
    assert not result["stop"] and not result["lemma"]
    data_warnings = [w for w in result["warnings"] if "NLTK data not found" in w]
    assert len(data_warnings) == 1, result["warnings"]  # one clear warning, naming each resource
    assert "stopwords" in data_warnings[0] and "wordnet" in data_warnings[0]


def test_lexicon_round_trips_through_json(tmp_path):
    lexicon = DataCueMiner(prior_scale=9, min_count=1).fit(ANY_TEXTS, ANY_LABELS).lexicon_
    lexicon.to_json(tmp_path / "cues.json")
    back = TriggerLexicon.from_json(tmp_path / "cues.json")
    assert back.source == "data" and back.meta == lexicon.meta
    assert [e.to_record() for e in back.entries] == [e.to_record() for e in lexicon.entries]


def test_mine_dataset_reads_a_labelled_prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": t, "label": lab} for t, lab in zip(ANY_TEXTS, ANY_LABELS, strict=True)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    lexicon = mine_dataset(path, view="any", prior_scale=9, min_count=1)
    assert lexicon.top("refusal", 1) == ["share"]
    assert lexicon.meta["dataset"] == "prompts.jsonl"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"prompt": "tell me"}) + "\n")
    with pytest.raises(ProbeError, match="1 of 5 prompts have no label"):
        mine_dataset(path)


needs_vlguard = pytest.mark.skipif(
    not VLGUARD_TRAIN.is_file(), reason=f"shared VLGuard train set not found at {VLGUARD_TRAIN}"
)


@pytest.fixture(scope="module")
def vlguard_first() -> DataCueMiner:
    from probe.data import load_prompts

    prompts = load_prompts(VLGUARD_TRAIN, format="vlguard")
    return DataCueMiner(view="first").fit([p.prompt for p in prompts], [p.label for p in prompts])


@needs_vlguard
def test_vlguard_lead_word_counts_match_the_design_note(vlguard_first):
    counts = vlguard_first.counts_
    vocab = vlguard_first.vocabulary_
    assert list(vlguard_first.n_prompts_) == [2000, 977]
    assert list(counts[vocab["share"]]) == [195, 0]  # "share" begins 195 unsafe, 0 safe
    assert counts[vocab["what"], 1] == 869  # "what" begins 869 of the 977 safe queries


@needs_vlguard
def test_vlguard_first_word_view_recovers_share_and_what(vlguard_first):
    lexicon = vlguard_first.lexicon_
    assert "share" in lexicon.top("refusal", 10)
    assert "what" in lexicon.top("compliance", 3)
    assert lexicon.get("share").q_value < 1e-6 and lexicon.get("what").q_value < 1e-6


@needs_vlguard
def test_vlguard_any_position_view_ranks_what_first():
    lexicon = mine_dataset(VLGUARD_TRAIN, format="vlguard", view="any")
    assert lexicon.top("compliance", 1) == ["what"]
    assert "share" in lexicon.top("refusal", 20)
    assert np.isfinite([e.extra["z"] for e in lexicon.entries]).all()
