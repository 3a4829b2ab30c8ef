"""Query: the image is part of what is asked, and no edit can drop it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from probe.data import Prompt
from probe.query import Query, as_query
from probe.words import delete_word, replace_word, split_words


def test_equality_and_hash_include_the_image():
    a, b = Query("Tell me", Path("a.png")), Query("Tell me", Path("b.png"))
    assert a != b and hash(a) != hash(b)
    assert a == Query("Tell me", Path("a.png")) and a != Query("Tell me")
    assert len({a, b, Query("Tell me"), Query("Tell me", Path("a.png"))}) == 3


def test_a_query_is_frozen_and_not_a_string():
    query = Query("Tell me", Path("a.png"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        query.text = "x"  # type: ignore[misc]
    assert not isinstance(query, str)
    with pytest.raises(TypeError):
        Query(query)  # type: ignore[arg-type]
    assert Query("x", "a.png").image == Path("a.png")  # type: ignore[arg-type]


def test_every_edit_keeps_the_image():
    query = Query("Tell me, now: how to bake bread", Path("/i.png"))
    for word in split_words(query.text):
        for variant in (delete_word(query, word), replace_word(query, word, "share")):
            assert isinstance(variant, Query) and variant.image == query.image
            assert variant.text != query.text
    assert query.with_text("Share it") == Query("Share it", Path("/i.png"))


def test_text_callers_keep_plain_strings():
    word = split_words("tell me")[0]
    assert replace_word("tell me", word, "share") == "share me"
    assert delete_word("tell me", word) == "me"
    assert as_query("tell me") == Query("tell me")


def test_prompt_query_carries_its_image():
    prompt = Prompt("Describe it", "p", "benign", image=Path("x.png"))
    assert prompt.query == Query("Describe it", Path("x.png"))
    assert Prompt("Describe it", "q").query == Query("Describe it")


def test_a_text_only_model_is_asked_the_text(tiny_subjects):
    subject = tiny_subjects["byte_bpe"]
    encoded = subject.encode(Query("Tell me a story", Path("a.png")))
    assert encoded.query == Query("Tell me a story")
    assert encoded.input_ids == subject.encode("Tell me a story").input_ids


def test_attack_edits_keep_the_image():
    from probe.attack.transformations import EditContext

    query = Query("Tell me about this photo", Path("/p.png"))
    context = EditContext(query, tag=False)
    edits = [
        context.substitution(0, "share", "trigger"),
        context.insertion(0, "what", "trigger"),
        context.deletion(0),
    ]
    assert [e.variant for e in edits] == [
        Query("Share me about this photo", Path("/p.png")),
        Query("What tell me about this photo", Path("/p.png")),
        Query("Me about this photo", Path("/p.png")),
    ]
