"""LexiconBuilder on hand-built attributions, and the lexicon.json / lexicon.csv table."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from probe.attribution import WordAttribution
from probe.errors import ProbeError
from probe.lexicon.builder import LexiconBuilder
from probe.lexicon.table import LexiconEntry, TriggerLexicon

CONTRACT_FIELDS = {
    "word",
    "direction",
    "effect",
    "ci_low",
    "ci_high",
    "support",
    "p_value",
    "q_value",
    "flip_rate",
}


def record(i: int, words: list[str], scores: list[float], label: str | None = None):
    spans, start = [], 0
    for w in words:
        spans.append((start, start + len(w)))
        start += len(w) + 1
    return WordAttribution(
        id=f"p{i}",
        prompt=" ".join(words),
        label=label,
        words=list(words),
        spans=spans,
        scores=[float(s) for s in scores],
        margin=float(sum(scores)),
        method="hand",
    )


def planted(n_per_lead: int = 5, seed: int = 0, bomb: float | None = None):
    """Prompts led by "share" (+2, toward refusal), "what" (-2) or neutral "tell" (noise).

    With ``bomb``, every prompt asks about a bomb whose score is ``bomb`` (a content word).
    """
    rng = np.random.default_rng(seed)
    objects = ["bread", "cake", "soup", "tea", "kite"]
    records = []
    for i in range(3 * n_per_lead):
        lead = ("share", "what", "tell")[i % 3]
        obj = "bomb" if bomb is not None else objects[i % len(objects)]
        words = [lead, "me", "how", "to", "make", "a", obj]
        scores = list(rng.normal(0.0, 0.15, size=len(words)))
        scores[0] += {"share": 2.0, "what": -2.0, "tell": 0.0}[lead]
        if bomb is not None:
            scores[-1] = bomb + rng.normal(0.0, 0.1)
        records.append(record(i, words, scores))
    return records


def test_planted_words_rank_first_in_their_direction():
    lexicon = LexiconBuilder(min_support=3, seed=0).fit(planted()).lexicon_
    assert lexicon.top("refusal", 1) == ["share"]
    assert lexicon.top("compliance", 1) == ["what"]
    share, what = lexicon.get("share"), lexicon.get("what")
    assert share.direction == "refusal" and share.effect > 1.5
    assert what.direction == "compliance" and what.effect < -1.5
    assert share.ci_low > 0 and what.ci_high < 0
    assert share.consistency == 1.0 and what.consistency == 1.0
    assert share.extra["lead_share"] == 1.0
    # entries are grouped by direction: all refusal entries first, each group best-first
    directions = [e.direction for e in lexicon.entries]
    assert directions == sorted(directions, key=lambda d: d != "refusal")
    for e in lexicon.entries:
        assert e.ci_low <= e.effect <= e.ci_high
        assert 0.0 < e.p_value <= 1.0 and 0.0 < e.q_value <= 1.0
        assert e.q_value >= e.p_value - 1e-12
        assert (e.direction == "refusal") == (e.effect > 0)


def test_effect_is_mean_of_per_prompt_sums_and_support_counts_prompts():
    records = [
        record(1, ["very", "very", "good", "!"], [0.5, 0.25, 1.0, 9.0]),
        record(2, ["Very", "good"], [1.0, -1.0]),
        record(3, ["good", "very", "?"], [2.0, 0.5, -9.0]),
    ]
    builder = LexiconBuilder(min_support=1, lemmatize=False, separate_content=False).fit(records)
    very, good = builder.lexicon_.get("very"), builder.lexicon_.get("good")
    # "very" twice in p1 sums (0.75), case folded in p2: per-prompt values 0.75, 1.0, 0.5
    np.testing.assert_allclose(builder.word_scores_["very"], [0.75, 1.0, 0.5])
    assert very.support == 3  # prompts, not the 4 occurrences
    assert very.effect == pytest.approx(0.75)
    assert good.support == 3
    assert good.effect == pytest.approx((1.0 - 1.0 + 2.0) / 3)
    assert good.consistency == pytest.approx(2 / 3)
    # punctuation is never a trigger
    assert builder.lexicon_.get("!") is None and builder.lexicon_.get("?") is None
    assert builder.n_prompts_ == 3


def test_min_support_drops_rare_words():
    records = [
        record(1, ["alpha", "beta"], [1.0, 0.5]),
        record(2, ["alpha", "beta"], [1.0, 0.5]),
        record(3, ["alpha", "gamma"], [1.0, 0.5]),
    ]
    kw = {"lemmatize": False, "separate_content": False}
    words = {e.word for e in LexiconBuilder(min_support=3, **kw).fit(records).lexicon_.entries}
    assert words == {"alpha"}
    words = {e.word for e in LexiconBuilder(min_support=2, **kw).fit(records).lexicon_.entries}
    assert words == {"alpha", "beta"}
    words = {e.word for e in LexiconBuilder(min_support=1, **kw).fit(records).lexicon_.entries}
    assert words == {"alpha", "beta", "gamma"}


def test_same_seed_gives_identical_lexicon():
    records = planted(seed=4)
    a = LexiconBuilder(seed=3).fit(records).lexicon_
    b = LexiconBuilder(seed=3).fit(records).lexicon_
    assert [e.to_record() for e in a.entries] == [e.to_record() for e in b.entries]


def test_content_noun_ranks_after_trigger_words():
    records = planted(bomb=5.0)  # "bomb" pushes harder than "share" but is what is asked about
    lexicon = LexiconBuilder(seed=0).fit(records).lexicon_
    bomb = lexicon.get("bomb")
    assert bomb is not None and bomb.direction == "refusal"
    assert bomb.role == "content"
    assert bomb.effect > lexicon.get("share").effect
    assert lexicon.get("share").role == "trigger"
    refusal = lexicon.ranked("refusal")
    assert refusal[0].word == "share"
    bomb_rank = [e.word for e in refusal].index("bomb")
    assert all(e.role == "content" for e in refusal[bomb_rank:])
    assert all(e.role in ("trigger", "weak") for e in refusal[:bomb_rank])
    # without the content/trigger split the bigger effect wins
    plain = LexiconBuilder(seed=0, separate_content=False).fit(records).lexicon_
    assert plain.top("refusal", 1) == ["bomb"]


def test_negligible_effects_are_weak_not_triggers():
    """Issue 12: a word far below the margins' spread is listed as weak and ranks after the
    triggers; the floor is configurable (0 turns it off)."""
    records = planted()
    lexicon = LexiconBuilder(seed=0).fit(records).lexicon_
    floor = lexicon.meta["effect_floor_value"]
    assert floor > 0
    for entry in lexicon.entries:
        if entry.role == "weak":
            assert abs(entry.effect) < floor
        elif entry.role == "trigger":
            assert abs(entry.effect) >= floor
    assert lexicon.get("share").role == "trigger"
    refusal = [e.role for e in lexicon.ranked("refusal")]
    assert refusal == sorted(refusal, key=["trigger", "weak", "content"].index)
    assert "weak" in {e.role for e in lexicon.entries}
    off = LexiconBuilder(seed=0, effect_floor=0.0).fit(records).lexicon_
    assert "weak" not in {e.role for e in off.entries}


# ------------------------------------------------------------------ the table on disk


def test_json_round_trip(tmp_path):
    lexicon = LexiconBuilder(seed=0).fit(planted()).lexicon_
    lexicon.entries[0].flip_rate = 0.75
    lexicon.entries[0].flip_ci_low, lexicon.entries[0].flip_ci_high = 0.4, 0.9
    path = tmp_path / "lexicon.json"
    lexicon.to_json(path)
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert [e["word"] for e in payload["entries"]] == [e.word for e in lexicon.entries]
    for entry in payload["entries"]:
        assert CONTRACT_FIELDS <= set(entry)
    back = TriggerLexicon.from_json(path)
    assert back.source == lexicon.source
    assert back.meta == json.loads(json.dumps(lexicon.meta))
    assert [e.to_record() for e in back.entries] == [e.to_record() for e in lexicon.entries]
    assert back.top("refusal") == lexicon.top("refusal")
    assert back.top("compliance") == lexicon.top("compliance")
    # and once more: the file it writes is the same file
    again = tmp_path / "again.json"
    back.to_json(again)
    assert again.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


def test_role_is_a_field_written_where_it_always_was(tmp_path):
    # One entry as earlier versions wrote it: role after the flip fields, before extra columns.
    entry = {
        "word": "share",
        "direction": "refusal",
        "effect": 1.5,
        "ci_low": 1.0,
        "ci_high": 2.0,
        "support": 4,
        "p_value": 0.01,
        "q_value": 0.02,
        "consistency": 1.0,
        "flip_rate": None,
        "flip_ci_low": None,
        "flip_ci_high": None,
        "role": "weak",
        "lead_share": 0.5,
    }
    cue = {k: v for k, v in entry.items() if k not in ("role", "lead_share")} | {"z": 3.0}
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"source": "model", "meta": {}, "entries": [entry, cue]}, indent=1))
    lexicon = TriggerLexicon.from_json(old)
    read, read_cue = lexicon.entries
    assert read.role == "weak" and "role" not in read.extra and read_cue.role is None
    assert list(read.to_record()) == list(entry) and read_cue.to_record() == cue
    lexicon.to_json(tmp_path / "new.json")
    assert (tmp_path / "new.json").read_text() == old.read_text() + "\n"
    lexicon.to_csv(tmp_path / "new.csv")
    header = (tmp_path / "new.csv").read_text().splitlines()[0].split(",")
    assert header == [*entry, "z"]
    entry["role"] = ["trigger"]
    old.write_text(json.dumps({"entries": [entry]}))
    with pytest.raises(ProbeError, match="entry 1: role must be a string"):
        TriggerLexicon.from_json(old)


def test_nan_fields_round_trip_as_null(tmp_path):
    entry = LexiconEntry("x", "refusal", math.nan, math.nan, math.nan, 0, math.nan, math.nan)
    path = tmp_path / "nan.json"
    TriggerLexicon([entry]).to_json(path)
    assert json.loads(path.read_text())["entries"][0]["effect"] is None  # strict JSON, no NaN
    back = TriggerLexicon.from_json(path).entries[0]
    assert math.isnan(back.effect) and back.support == 0


def test_csv_is_the_same_table(tmp_path):
    lexicon = LexiconBuilder(seed=0).fit(planted()).lexicon_
    path = tmp_path / "lexicon.csv"
    lexicon.to_csv(path)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert CONTRACT_FIELDS <= set(rows[0])
    assert [r["word"] for r in rows] == [e.word for e in lexicon.entries]
    assert [r["direction"] for r in rows] == [e.direction for e in lexicon.entries]
    for row, entry in zip(rows, lexicon.entries, strict=True):
        assert float(row["effect"]) == pytest.approx(entry.effect)
        assert int(row["support"]) == entry.support
    # an empty lexicon still writes a header
    TriggerLexicon([]).to_csv(tmp_path / "empty.csv")
    header = (tmp_path / "empty.csv").read_text().splitlines()[0].split(",")
    assert CONTRACT_FIELDS <= set(header)


@pytest.mark.parametrize(
    "content",
    [
        "not json {",
        json.dumps({"no_entries": []}),
        json.dumps([1, 2]),
        json.dumps("a string"),
        json.dumps({"entries": 5}),
        json.dumps({"entries": [{"direction": "refusal"}]}),
        json.dumps({"entries": ["share"]}),
        json.dumps({"entries": [{"word": "share", "direction": "sideways"}]}),
        json.dumps({"entries": [{"word": "share", "direction": "refusal", "effect": "big"}]}),
        json.dumps({"entries": [{"word": "s", "direction": "refusal", "support": "many"}]}),
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_from_json_errors_are_probe_errors(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ProbeError):
        TriggerLexicon.from_json(path)


def test_from_json_missing_or_unreadable(tmp_path):
    with pytest.raises(ProbeError, match="not found"):
        TriggerLexicon.from_json(tmp_path / "missing.json")
    with pytest.raises(ProbeError):
        TriggerLexicon.from_json(tmp_path)  # a folder
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ProbeError):
        TriggerLexicon.from_json(binary)


@pytest.mark.parametrize("size", [1, 5, 13, 14, 301])
def test_resampling_in_blocks_gives_the_numbers_of_one_matrix(size):
    """The bootstrap and the sign-flip test draw block by block (memory flat in the prompt
    count) and must give exactly what drawing the whole matrix at once gives."""
    from probe.lexicon.stats import bootstrap_ci, sign_flip_p_value

    values = np.random.default_rng(7).normal(0.2, 1.0, size)
    whole, blocks = np.random.default_rng(3), np.random.default_rng(3)
    assert bootstrap_ci(values, 0.95, 1000, whole, block_elements=10**9) == bootstrap_ci(
        values, 0.95, 1000, blocks, block_elements=size * 7 + 3
    )
    assert sign_flip_p_value(values, 2000, whole, block_elements=10**9) == sign_flip_p_value(
        values, 2000, blocks, block_elements=size * 3 + 1
    )
    # Both generators must have used the same stream, so the next draws also agree.
    assert whole.integers(0, 10**9) == blocks.integers(0, 10**9)


def test_resampling_matches_the_dense_formula():
    """Against the textbook dense computation (all resamples in one matrix)."""
    from probe.lexicon.stats import bootstrap_ci, sign_flip_p_value

    values = np.random.default_rng(1).normal(0.1, 1.0, 200)
    rng = np.random.default_rng(5)
    means = values[rng.integers(0, 200, size=(500, 200))].mean(axis=1)
    alpha = (1 - 0.95) / 2
    expected_ci = tuple(float(v) for v in np.quantile(means, [alpha, 1 - alpha]))
    signs = rng.choice(np.array([-1.0, 1.0]), size=(3000, 200))
    stats = np.abs((signs * values).mean(axis=1))
    expected_p = (np.sum(stats >= abs(values.mean()) - 1e-12) + 1) / 3001
    rng = np.random.default_rng(5)
    assert bootstrap_ci(values, 0.95, 500, rng, block_elements=999) == expected_ci
    assert sign_flip_p_value(values, 3000, rng, block_elements=999) == pytest.approx(
        expected_p, abs=0
    )
