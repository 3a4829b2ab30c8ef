"""Unit tests of probe.words: prompt words, one-word edits and token-to-word alignment."""

from __future__ import annotations

import pytest

from probe.words import Word, align_tokens, delete_word, replace_word, split_words


def test_split_words_spans_cover_words_and_punctuation():
    text = "Hello, world! Can't you e-mail me?? 42 times…"
    words = split_words(text)
    assert [w.text for w in words] == [
        "Hello",
        ",",
        "world",
        "!",
        "Can't",
        "you",
        "e-mail",
        "me",
        "??",
        "42",
        "times",
        "…",
    ]
    for w in words:
        assert text[w.start : w.end] == w.text
    # spans are ordered, disjoint, and together with whitespace cover the whole text
    for a, b in zip(words, words[1:], strict=False):
        assert a.end <= b.start
        assert text[a.end : b.start].strip() == ""
    assert text[: words[0].start].strip() == "" and text[words[-1].end :].strip() == ""
    assert [w.is_punct for w in words] == [
        False,
        True,
        False,
        True,
        False,
        False,
        False,
        False,
        True,
        False,
        False,
        True,
    ]


def test_split_words_edge_cases():
    assert split_words("") == []
    assert split_words("   \n\t ") == []
    assert split_words("  hi  ") == [Word("hi", 2, 4)]
    assert [w.text for w in split_words("Über straße")] == ["Über", "straße"]


@pytest.mark.parametrize(
    ("text", "index", "new", "expected"),
    [
        ("Share a recipe for soup", 0, "what", "What a recipe for soup"),
        ("Share a recipe for soup", 0, "What", "What a recipe for soup"),
        ("please share a recipe", 1, "what", "please what a recipe"),
        ("Tell me, please!", 3, "now", "Tell me, now!"),
        ("Tell me, please!", 0, "show", "Show me, please!"),
    ],
)
def test_replace_word_keeps_capitalisation(text, index, new, expected):
    words = split_words(text)
    out = replace_word(text, words[index], new)
    assert out == expected
    # exactly one word changed, everything else in place
    before, after = split_words(text), split_words(out)
    assert len(before) == len(after)
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a.text != b.text] == [
        index
    ]


@pytest.mark.parametrize(
    ("text", "index", "expected"),
    [
        ("Tell me about cake", 0, "me about cake"),
        ("Tell me about cake", 1, "Tell about cake"),
        ("Tell me about cake", 3, "Tell me about"),
        ("Tell me about cake!", 3, "Tell me about!"),
        ("Tell me, now", 2, "Tell me now"),  # punctuation attached to the word before
        ("a -b", 1, "a b"),  # punctuation attached to the word after
        ("x\nhi there", 1, "x\nthere"),
        ("alone", 0, ""),
    ],
)
def test_delete_word_leaves_no_double_space(text, index, expected):
    out = delete_word(text, split_words(text)[index])
    assert out == expected
    assert "  " not in out
    assert out == out.strip(" ")
    # the other words survive as they were (none glued together)
    kept = [w.text for i, w in enumerate(split_words(text)) if i != index]
    assert [w.text for w in split_words(out)] == kept


def test_align_tokens_on_hand_made_offsets():
    prompt = "Hi there!"
    chat = "<|user|> Hi there! <|assistant|>"
    region = chat.index(prompt)
    assert region == 9
    words = split_words(prompt)  # Hi [0,2), there [3,8), ! [8,9)
    offsets = [
        (0, 8),  # "<|user|>": template
        (8, 9),  # " ": whitespace before the prompt
        (9, 11),  # "Hi"
        (11, 14),  # " th": leading space + part of "there"
        (14, 17),  # "ere"
        (17, 18),  # "!"
        (18, 19),  # " "
        (19, 32),  # "<|assistant|>"
        (0, 0),  # a special token with an empty span
    ]
    assert align_tokens(offsets, words, region) == [-1, -1, 0, 1, 1, 2, -1, -1, -1]


def test_align_tokens_most_overlap_and_ties():
    words = split_words("ab cdef")  # ab [0,2), cdef [3,7)
    # overlaps "ab" by 1 char and "cdef" by 3: goes to cdef
    assert align_tokens([(1, 6)], words, 0) == [1]
    # overlaps both by 1 char: the first wins
    assert align_tokens([(1, 4)], words, 0) == [0]
    # the same offsets shifted by a region start
    assert align_tokens([(11, 16), (11, 14)], words, 10) == [1, 0]
