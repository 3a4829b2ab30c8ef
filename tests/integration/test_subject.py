"""Subject: word alignment for every tokenizer family, batched margins, sign, load errors.

Models are tiny random Llamas with tokenizers trained in code (tests/tiny_models.py), saved
with save_pretrained and loaded through Subject.load, like a user's model.
"""

from __future__ import annotations

import string

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import CHATML_TEMPLATE, FAMILIES, build_tiny_model, check_alignment, rel_spans

from probe.errors import ProbeError
from probe.subject.margin import MarginConfig
from probe.subject.text import Subject
from probe.words import split_words

pytestmark = pytest.mark.usefixtures("torch_single_thread")

SAMPLE = "Share how to make a cake, please."
PROMPTS = [
    SAMPLE,
    "Hi",
    "?",
    "What's the café's  best   dish, naïve one?",
    "Tell me about e-mail in 2024 -- and don't forget the ‘quotes’!",
    " ".join(["Please explain step by step how a kite flies in strong wind."] * 4),
    "assistant",
    "a",
    "Ok",
    "How do I bake bread at home without yeast, and what flour works best for it?",
    "日本 🙂 Zürich",
    "Why?",
    "Write a poem about the sea, the sky and the lazy brown dog that jumps over the fox.",
    "x" * 40,
    "Sorry",
    "Sure: here is 1 2 3",
    "Make tea.",
    "Explain the history of the café in Zürich in three short, clear paragraphs please.",
    "I",
    "Can you  help?",
]


# ------------------------------------------------------------------------------- alignment
# Byte-level BPE (GPT-2 pre-tokenizer regex) and WordPiece (BERT pre-tokenizer) never merge
# letters with punctuation, so every word owns a token. SentencePiece-style tokenizers split on
# spaces only and may learn "▁cake," — one token over two words, owned by the word it overlaps
# most ("cake"), which leaves "," without a token of its own.
SPLITS_PUNCTUATION = {"byte_bpe": True, "sp_unigram": False, "sp_bpe": False, "wordpiece": True}


@pytest.mark.parametrize("family", FAMILIES)
def test_alignment_of_sample_prompt(tiny_subjects, family):
    subject = tiny_subjects[family]
    enc = subject.encode(SAMPLE)
    texts = ["Share", "how", "to", "make", "a", "cake", ",", "please", "."]
    assert [w.text for w in enc.words] == texts
    spans, _ = rel_spans(subject, enc)
    in_prompt = [b > 0 and a < len(SAMPLE) for a, b in spans]
    for owner, (a, b), inside in zip(enc.token_word, spans, in_prompt, strict=True):
        piece = SAMPLE[max(a, 0) : max(b, 0)].strip()
        if not inside:
            assert owner == -1  # template text before and after the prompt
        elif owner >= 0:
            # the token's characters are (mostly) its word's: the word starts the token's text
            word = enc.words[owner].text
            assert piece.startswith(word) or word.find(piece) >= 0, (family, piece, word)
        else:
            assert not piece, (family, piece)  # inside the prompt only whitespace is unowned
    assert enc.token_word[0] == -1 and enc.token_word[-1] == -1
    owners = [w for w in enc.token_word if w >= 0]
    assert owners == sorted(owners)  # tokens follow the words in order
    tokens = subject.tokenizer.convert_ids_to_tokens(list(enc.input_ids))
    owner_of = {
        t.lstrip("▁Ġ").lower(): enc.words[w].text
        for t, w in zip(tokens, enc.token_word, strict=True)
        if w >= 0
    }
    assert owner_of.get("how") == "how"
    if SPLITS_PUNCTUATION[family]:
        assert sorted(set(owners)) == list(range(len(texts)))
    else:
        assert set(owners) >= {i for i, t in enumerate(texts) if t.isalpha()}
    check_alignment(subject, SAMPLE, strict_ownership=SPLITS_PUNCTUATION[family])


def test_byte_level_tokens_map_to_their_words(tiny_subjects):
    subject = tiny_subjects["byte_bpe"]
    enc = subject.encode(SAMPLE)
    tokens = subject.tokenizer.convert_ids_to_tokens(list(enc.input_ids))
    mapped = {t: enc.words[w].text for t, w in zip(tokens, enc.token_word, strict=True) if w >= 0}
    assert mapped["Ġhow"] == "how"
    assert mapped["Ġto"] == "to"
    for t, w in zip(tokens, enc.token_word, strict=True):
        if t in ("<|im_start|>", "<|im_end|>") or t == "Ċ":
            assert w == -1
    assert tokens[0] == "<|im_start|>"


def test_wordpiece_continuations_join_their_word(tiny_subjects):
    subject = tiny_subjects["wordpiece"]
    enc = subject.encode("Zürichcafébread unbelievably")
    tokens = subject.tokenizer.convert_ids_to_tokens(list(enc.input_ids))
    pieces = [(t, w) for t, w in zip(tokens, enc.token_word, strict=True) if w >= 0]
    assert any(t.startswith("##") for t, _ in pieces), pieces
    for t, w in pieces:
        if t.startswith("##"):
            assert w in (0, 1)
    assert {w for _, w in pieces} == {0, 1}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prompt", PROMPTS[:13])
def test_alignment_rules_on_fixed_prompts(tiny_subjects, family, prompt):
    check_alignment(tiny_subjects[family], prompt, strict_ownership=SPLITS_PUNCTUATION[family])


def test_prompt_equal_to_template_text_is_found_in_the_user_turn(tiny_subjects):
    # The prompt "assistant" also occurs in the generation prompt "<|im_start|>assistant".
    subject = tiny_subjects["byte_bpe"]
    for prompt in ("assistant", "a", "user", "im_end"):
        enc = subject.encode(prompt)
        owned = [i for i, w in enumerate(enc.token_word) if w >= 0]
        spans, _ = rel_spans(subject, enc)
        assert owned and all(0 <= spans[i][0] < len(prompt) for i in owned), prompt


_ALPHABET = (
    string.ascii_letters + string.digits + " " * 6 + ".,!?;:'’\"-()/@#%&*+=" + "éèüñçßøÉ日本🙂"
)
_WORDS = [
    "Share",
    "what",
    "café",
    "don't",
    "e-mail",
    "naïve",
    "’quoted’",
    "42",
    "...",
    "?!",
    "user",
    "assistant",
    "INST",
    "Zürich",
]
prompt_text = st.one_of(
    st.text(alphabet=_ALPHABET, min_size=0, max_size=60),
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(_WORDS), st.text(alphabet=_ALPHABET, min_size=1, max_size=6)),
            st.sampled_from([" ", "  ", "   ", ", ", "'", "-", ""]),
        ),
        min_size=1,
        max_size=10,
    ).map(lambda parts: "".join(w + s for w, s in parts)),
)


@given(prompt=prompt_text)
@settings(max_examples=300, deadline=None)
def test_split_words_partitions_every_non_space_character(prompt):
    words = split_words(prompt)
    owner = [-1] * len(prompt)
    for index, word in enumerate(words):
        assert word.text == prompt[word.start : word.end] and word.text
        assert not any(ch.isspace() for ch in word.text)
        for k in range(word.start, word.end):
            assert owner[k] == -1, "overlapping words"
            owner[k] = index
    for k, ch in enumerate(prompt):
        assert (owner[k] >= 0) == (not ch.isspace()), (prompt, k, ch)


@pytest.mark.parametrize("family", FAMILIES)
@given(prompt=prompt_text)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_alignment_property_over_random_prompts(tiny_subjects, family, prompt):
    # Every word is covered by a token in every family. Byte-level BPE never merges two words
    # into one token, so there every word also owns a token -- except in a prompt that opens
    # with a contraction such as "'s": GPT-2's pre-tokenizer keeps "'s" whole, and the word
    # "s" then shares its only token with "'". (SentencePiece may learn "▁cake,"; WordPiece
    # turns "0🙂" into one [UNK], as BERT does: a symbol is not punctuation to its splitter.)
    strict = family == "byte_bpe" and prompt[:1] != "'"
    check_alignment(tiny_subjects[family], prompt, strict_ownership=strict)


# ---------------------------------------------------------------------------------- margins
def _copy(subject: Subject, **kwargs) -> Subject:
    """A Subject over the same (shared) model and tokenizer with other settings."""
    return Subject(subject.model, subject.tokenizer, name=subject.name, **kwargs)


def _one_at_a_time(subject: Subject, sequences, config=None) -> np.ndarray:
    single = _copy(subject, batch_size=1)
    return np.array([single.margins([seq], config)[0] for seq in sequences])


# Two multi-token openings per side keep the sweep cheap; the default config is checked below.
SMALL = MarginConfig(("I'm sorry", "I cannot"), ("Sure", "Here"), "test")


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_margins_equal_one_at_a_time(tiny_subjects, family):
    subject = tiny_subjects[family]
    sequences = [subject.encode(p).input_ids for p in PROMPTS]
    lengths = [len(s) for s in sequences]
    assert max(lengths) > 8 * min(lengths)  # very different lengths share a batch
    reference = _one_at_a_time(subject, sequences, SMALL)
    assert np.all(np.isfinite(reference)) and np.ptp(reference) > 1e-3
    for batch_size in (1, 3, 16):
        batched = _copy(subject, batch_size=batch_size).margins(sequences, SMALL)
        np.testing.assert_allclose(batched, reference, atol=1e-4, rtol=0)
    # prompt_margins is the same computation from text, also in a different order
    order = list(reversed(range(len(PROMPTS))))
    shuffled = _copy(subject, batch_size=16).prompt_margins([PROMPTS[i] for i in order], SMALL)
    np.testing.assert_allclose(shuffled, reference[order], atol=1e-4, rtol=0)


def test_batched_margins_with_default_openings(tiny_subjects):
    subject = tiny_subjects["byte_bpe"]
    sequences = [subject.encode(p).input_ids for p in PROMPTS if len(p) < 100]
    np.testing.assert_allclose(
        _copy(subject, batch_size=16).margins(sequences),
        _one_at_a_time(subject, sequences),
        atol=1e-4,
        rtol=0,
    )


def test_margins_unchanged_by_left_padded_generation(tiny_subjects):
    subject = _copy(tiny_subjects["byte_bpe"], batch_size=16)
    prompts = PROMPTS[:10]
    before = subject.prompt_margins(prompts, SMALL)
    mixed = [PROMPTS[1], PROMPTS[5], PROMPTS[0], PROMPTS[2], PROMPTS[9]]  # 11..130 tokens
    responses = subject.generate(mixed, max_new_tokens=4)
    assert len(responses) == len(mixed) and all(isinstance(r, str) for r in responses)
    after = subject.prompt_margins(prompts, SMALL)
    np.testing.assert_allclose(after, before, atol=1e-4, rtol=0)
    sequences = [subject.encode(p).input_ids for p in prompts]
    np.testing.assert_allclose(after, _one_at_a_time(subject, sequences, SMALL), atol=1e-4)


def test_left_padded_generation_equals_one_at_a_time(tiny_subjects):
    subject = tiny_subjects["byte_bpe"]
    prompts = [PROMPTS[1], PROMPTS[5], PROMPTS[0], PROMPTS[9]]
    batched = _copy(subject, batch_size=4).generate(prompts, max_new_tokens=6)
    single = [_copy(subject, batch_size=1).generate([p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single


def _reference_margin(subject: Subject, ids, config: MarginConfig) -> float:
    """margin by the definition: one unpadded forward pass per (prompt, opening)."""
    scores = []
    for opening in (*config.refusal, *config.compliance):
        target = subject.tokenizer(opening, add_special_tokens=False)["input_ids"]
        x = torch.tensor([list(ids) + target])
        with torch.no_grad():
            logits = subject.model(input_ids=x).logits[0].float()
        logp = logits[len(ids) - 1 : len(ids) - 1 + len(target)].log_softmax(-1)
        scores.append(logp[torch.arange(len(target)), torch.tensor(target)].sum())
    scores = torch.stack(scores)
    k = len(config.refusal)
    return float(torch.logsumexp(scores[:k], 0) - torch.logsumexp(scores[k:], 0))


@pytest.mark.parametrize("family", ["byte_bpe", "wordpiece"])
def test_margin_definition_and_sign_convention(tiny_subjects, family):
    subject = tiny_subjects[family]
    config = MarginConfig(("I'm sorry", "I cannot", "As an AI"), ("Sure", "Here"), "test")
    swapped = MarginConfig(config.compliance, config.refusal, "swapped")
    prompts = PROMPTS[:5]
    sequences = [subject.encode(p).input_ids for p in prompts]
    margin = subject.margins(sequences, config)
    expected = [_reference_margin(subject, ids, config) for ids in sequences]
    np.testing.assert_allclose(margin, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(subject.margins(sequences, swapped), -margin, atol=1e-5, rtol=0)
    # one opening per side: margin = log P(refusal opening) - log P(compliance opening)
    only_refusal = MarginConfig(("I'm sorry",), ("Sure",), "one")
    np.testing.assert_allclose(
        subject.margins(sequences, only_refusal),
        [_reference_margin(subject, ids, only_refusal) for ids in sequences],
        atol=1e-4,
        rtol=0,
    )
    # the subject's own config is the default, used when none is given
    np.testing.assert_allclose(
        subject.margins(sequences), subject.margins(sequences, MarginConfig.default()), atol=1e-6
    )


# ----------------------------------------------------------------------------------- errors
def test_missing_chat_template_is_a_clear_error(tmp_path):
    folder = build_tiny_model(tmp_path / "no-template", "byte_bpe", chat_template=False)
    with pytest.raises(ProbeError, match="--chat-template"):
        Subject.load(folder)
    subject = Subject.load(folder, chat_template=CHATML_TEMPLATE)
    enc = subject.encode(SAMPLE)
    assert enc.text.startswith("<|im_start|>user\n" + SAMPLE)
    check_alignment(subject, SAMPLE, strict_ownership=True)
    assert np.isfinite(subject.prompt_margins([SAMPLE])).all()


def test_unknown_model_path_is_a_probe_error(tmp_path):
    with pytest.raises(ProbeError, match="no-such-model"):
        Subject.load(tmp_path / "no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProbeError, match="empty"):
        Subject.load(tmp_path / "empty")
    with pytest.raises(ProbeError, match="no-such-org/no-such-model"):
        Subject.load("no-such-org/no-such-model")
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"\0")
    with pytest.raises(ProbeError, match="is a file"):
        Subject.load(a_file)


def test_dtype_option(tiny_model_dirs):
    with pytest.raises(ProbeError, match="float13"):
        Subject.load(tiny_model_dirs["byte_bpe"], dtype="float13")
    subject = Subject.load(tiny_model_dirs["byte_bpe"], dtype="bfloat16")
    assert next(subject.model.parameters()).dtype == torch.bfloat16
    assert np.isfinite(subject.prompt_margins(PROMPTS[:3])).all()


@pytest.mark.parametrize("family", ["byte_bpe", "wordpiece"])
def test_prompt_longer_than_the_context_is_a_probe_error(tiny_subjects, family):
    subject = tiny_subjects[family]
    limit = subject.model.config.max_position_embeddings
    with pytest.raises(ProbeError, match=str(limit)):
        subject.encode(" ".join(["cake"] * (limit + 10)))
    with pytest.raises(ProbeError):
        subject.prompt_margins(["Hi", " ".join(["bread"] * (limit + 10))])
