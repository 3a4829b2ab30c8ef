"""Attribution engine: exactness against brute force, completeness, batching, the planted trigger.

Tiny random Llamas of every tokenizer family (tests/tiny_models.py) check the arithmetic; the
trained demo model checks that the methods find its planted "share" / "what" shortcuts.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import FAMILIES

from probe.attribution import REGISTRY, get_attributor
from probe.attribution.base import WordPerturber, token_to_word_scores
from probe.attribution.faithfulness import faithfulness, mean_faithfulness
from probe.data import Prompt
from probe.errors import ProbeError
from probe.subject.margin import MarginConfig
from probe.subject.text import Subject
from probe.words import delete_word, split_words

PROMPTS = [
    "Share how to make a cake, please.",
    "What's the café's best dish?",
    "Tell me about e-mail in 2024 -- and don't forget!",
    "Hi",
]
PAIR = MarginConfig(("I'm sorry",), ("Sure",), "pair")
METHODS = (
    "occlusion",
    "occlusion-baseline",
    "leave-one-out",
    "gradient-x-input",
    "integrated-gradients",
    "shapley",
    "lime",
    "captum-ablation",
)
FAST_PARAMS = {
    "integrated-gradients": {"n_steps": 8},
    "shapley": {"n_samples": 2},
    "lime": {"n_samples": 24},
}
PROPERTY = settings(
    deadline=None,
    max_examples=25,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread is fastest, and on a shared machine, immune to oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _prompts(texts) -> list[Prompt]:
    return [Prompt(t, f"p{i}") for i, t in enumerate(texts)]


def _with(subject: Subject, **kwargs) -> Subject:
    """A fresh Subject over the same model (the shared fixtures must not change state)."""
    params = {"margin": subject.margin_config, "batch_size": subject.batch_size} | kwargs
    return Subject(subject.model, subject.tokenizer, **params)


def _fast(name: str, **kwargs):
    return get_attributor(name, **(FAST_PARAMS.get(name, {}) | kwargs))


# ------------------------------------------------------------------------------- registry
def test_registry_has_every_method():
    assert set(METHODS) <= set(REGISTRY)
    with pytest.raises(ProbeError, match="unknown attribution method"):
        get_attributor("nope")


# ----------------------------------------------------------------------- exact occlusion
def _brute_force(subject: Subject, prompt: str, variant) -> list[float]:
    """margin(x) - margin(variant for word i), one sequence per model call."""
    enc = subject.encode(prompt)
    base = subject.margins([enc.input_ids])[0]
    scores = []
    for index, word in enumerate(enc.words):
        seq = variant(subject, enc, index, word)
        scores.append(0.0 if seq is None else base - subject.margins([seq])[0])
    return scores


def _deleted(subject, enc, index, word):
    return enc.without_words({index}) if index in enc.token_word else None


def _replaced(subject, enc, index, word):
    unk = subject.tokenizer.unk_token_id
    baseline = unk if unk is not None else subject.pad_id
    return WordPerturber(enc, baseline).apply({index}) if index in enc.token_word else None


def _text_deleted(subject, enc, index, word):
    return subject.encode(delete_word(enc.query, word)).input_ids


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("method", "variant"),
    [("occlusion", _deleted), ("occlusion-baseline", _replaced), ("leave-one-out", _text_deleted)],
)
def test_occlusion_equals_brute_force(tiny_subjects, family, method, variant):
    subject = _with(tiny_subjects[family], batch_size=5)
    results = get_attributor(method).attribute(subject, _prompts(PROMPTS))
    for result, prompt in zip(results, PROMPTS, strict=True):
        expected = _brute_force(subject, prompt, variant)
        np.testing.assert_allclose(result.scores, expected, atol=1e-5, rtol=0)
        assert result.margin == pytest.approx(subject.prompt_margins([prompt])[0], abs=1e-5)


def test_occlusion_equals_brute_force_on_demo(demo_subject):
    prompt = "Share about how to make a cake"
    result = get_attributor("occlusion").attribute(demo_subject, _prompts([prompt]))[0]
    expected = _brute_force(demo_subject, prompt, _deleted)
    np.testing.assert_allclose(result.scores, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
@PROPERTY
@given(data=st.data())
def test_shared_prefix_margins_equal_plain_margins(tiny_subjects, family, data):
    """Any edits of a sequence (deletions, replacements, insertions) score as ``margins``."""
    subject = _with(tiny_subjects[family], batch_size=3)
    base = list(subject.encode(PROMPTS[0]).input_ids)
    vocab = len(subject.tokenizer)
    variants = []
    for _ in range(data.draw(st.integers(1, 7))):
        seq = list(base)
        for _ in range(data.draw(st.integers(0, 3))):
            at = data.draw(st.integers(0, len(seq) - 1))
            kind = data.draw(st.sampled_from(["delete", "replace", "insert"]))
            token = data.draw(st.integers(0, vocab - 1))
            if kind == "delete" and len(seq) > 1:
                del seq[at]
            elif kind == "replace":
                seq[at] = token
            else:
                seq.insert(at, token)
        variants.append(seq)
    fast = subject.shared_prefix_margins(base, variants)
    np.testing.assert_allclose(fast, subject.margins(variants), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_margins_from_embeddings_equal_margins(tiny_subjects, family):
    subject = tiny_subjects[family]
    ids = subject.encode(PROMPTS[0]).input_ids
    embeds = subject.model.get_input_embeddings()(torch.tensor([ids, ids]))
    with torch.no_grad():
        got = subject.margins_from_embeddings(embeds).numpy()
    np.testing.assert_allclose(got, subject.margins([ids, ids]), atol=1e-5, rtol=0)


def test_prefix_sharing_falls_back_when_it_disagrees(tiny_subjects):
    subject = _with(tiny_subjects["byte_bpe"])
    subject._packed_logprobs = lambda layout, cache, **inputs: (
        10 * torch.randn(len(layout.rows), layout.max_segments, layout.n_openings)
    )
    enc = subject.encode(PROMPTS[0])
    variants = [enc.without_words({0}), list(enc.input_ids)]
    with pytest.warns(UserWarning, match="prefix sharing"):
        got = subject.shared_prefix_margins(enc.input_ids, variants)
    np.testing.assert_allclose(got, subject.margins(variants), atol=1e-6)


@pytest.mark.parametrize("margin", [PAIR, MarginConfig.default()], ids=["pair", "default"])
def test_captum_reference_equals_occlusion(tiny_subjects, margin):
    """captum LLMAttribution(FeatureAblation), one run per opening, rebuilt == occlusion.

    With one refusal and one compliance opening that is the refusal run minus the compliance
    run; with the 13 default openings the margin is rebuilt from every opening's run.
    """
    subject = _with(tiny_subjects["byte_bpe"], margin=margin)
    prompts = _prompts(PROMPTS[:2] if margin is PAIR else PROMPTS[:1])
    ours = get_attributor("occlusion").attribute(subject, prompts)
    for in_tokens in (False, True):
        theirs = get_attributor("captum-ablation", forward_in_tokens=in_tokens).attribute(
            subject, prompts
        )
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-5, rtol=0)
            assert a.margin == pytest.approx(b.margin, abs=1e-5)


# --------------------------------------------------------------- completeness and batching
@pytest.mark.parametrize("family", ["byte_bpe", "wordpiece"])
def test_integrated_gradients_completeness_within_delta(tiny_subjects, family):
    subject = tiny_subjects[family]
    for result in _fast("integrated-gradients").attribute(subject, _prompts(PROMPTS)):
        gap = sum(result.scores) - (result.margin - result.extra["baseline_margin"])
        delta = result.extra["ig_delta"]
        # template tokens score exactly 0, so captum's delta is all of the gap
        assert gap == pytest.approx(delta, abs=1e-5)
        assert abs(gap) <= abs(delta) + 1e-6


def test_integrated_gradients_equals_captum_layer_ig_on_the_embedding_layer(demo_subject):
    """probe integrates along the embeddings (so a VLM's image features can sit in them);
    on a text model that is captum's LayerIntegratedGradients on the embedding layer."""
    from captum.attr import LayerIntegratedGradients

    from probe.attribution.base import WordPerturber, baseline_token_id, token_to_word_scores

    subject = demo_subject
    embedding = subject.model.get_input_embeddings()
    subject.opening_embeddings()  # cached: the hooked forward must not re-enter the layer
    layer_ig = LayerIntegratedGradients(
        lambda ids: subject.margins_from_embeddings(embedding(ids)), embedding
    )
    ours = get_attributor("integrated-gradients", n_steps=16).attribute(
        subject, _prompts(PROMPTS[:2])
    )
    for result, text in zip(ours, PROMPTS[:2], strict=True):
        enc = subject.encode(text)
        perturber = WordPerturber(enc, baseline_token_id(subject, None))
        ids = torch.tensor([enc.input_ids])
        baseline = torch.tensor([perturber.apply(perturber.features)])
        attributions = layer_ig.attribute(ids, baselines=baseline, n_steps=16)
        expected = token_to_word_scores(enc, attributions.sum(-1)[0].detach().double().tolist())
        np.testing.assert_allclose(result.scores, expected, atol=1e-5)


def test_integrated_gradients_delta_shrinks_with_steps(demo_subject):
    prompt = _prompts(["Share about how to make a cake"])
    deltas = [
        abs(
            get_attributor("integrated-gradients", n_steps=n)
            .attribute(demo_subject, prompt)[0]
            .extra["ig_delta"]
        )
        for n in (4, 64)
    ]
    assert deltas[1] < deltas[0]
    assert deltas[1] < 0.01


def test_shapley_is_efficient(tiny_subjects):
    subject = tiny_subjects["sp_bpe"]
    for result in _fast("shapley").attribute(subject, _prompts(PROMPTS)):
        assert sum(result.scores) == pytest.approx(
            result.margin - result.extra["empty_margin"], abs=1e-5
        )


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_unbatched(tiny_subjects, method):
    subject = tiny_subjects["sp_unigram"]
    params = {"margin": PAIR} if method == "captum-ablation" else {}
    batched = _with(subject, batch_size=64, **params)
    single = _with(subject, batch_size=1, **params)
    together = _fast(method).attribute(batched, _prompts(PROMPTS))
    alone = [_fast(method).attribute(single, _prompts([p]))[0] for p in PROMPTS]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5, rtol=0)
        assert a.margin == pytest.approx(b.margin, abs=1e-5)


# ------------------------------------------------------------------- words and templates
@pytest.mark.parametrize("family", FAMILIES)
@PROPERTY
@given(
    text=st.text(
        alphabet=st.sampled_from(list("abcXYZ 'é-,.?!🙂1\t")), min_size=1, max_size=30
    ).filter(lambda t: t.strip())
)
def test_words_cover_prompt_and_template_is_never_perturbed(tiny_subjects, family, text):
    subject = tiny_subjects[family]
    enc = subject.encode(text)
    owned = [0] * len(text)
    for word in enc.words:
        for i in range(word.start, word.end):
            owned[i] += 1
    assert all(n == (0 if ch.isspace() else 1) for n, ch in zip(owned, text, strict=True))
    pairs = list(zip(enc.input_ids, enc.token_word, strict=True))
    for baseline in (None, subject.pad_id):
        perturber = WordPerturber(enc, baseline)
        for removed in ([], perturber.features, perturber.features[::2]):
            seq = perturber.apply(removed)
            if baseline is None:  # only the removed words' tokens go; the template stays
                assert seq == [t for t, w in pairs if w < 0 or w not in removed]
            else:  # same length; template tokens unchanged
                assert [s for s, (_, w) in zip(seq, pairs, strict=True) if w < 0] == [
                    t for t, w in pairs if w < 0
                ]
    result = get_attributor("occlusion").attribute(subject, _prompts([text]))[0]
    assert result.words == [w.text for w in split_words(text)]
    silent = set(range(len(enc.words))) - set(enc.token_word)
    assert all(result.scores[i] == 0.0 for i in silent)


def test_template_token_scores_are_dropped():
    enc = type("E", (), {"words": split_words("a b"), "token_word": (-1, 0, -1, 1, -1)})()
    assert token_to_word_scores(enc, [100.0, 1.0, 100.0, 2.0, 100.0]) == [1.0, 2.0]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_scores_each_word_once(tiny_subjects, method):
    subject = _with(tiny_subjects["wordpiece"], margin=PAIR)
    for result, prompt in zip(
        _fast(method).attribute(subject, _prompts(PROMPTS)), PROMPTS, strict=True
    ):
        words = split_words(prompt)
        assert result.words == [w.text for w in words]
        assert result.spans == [(w.start, w.end) for w in words]
        assert len(result.scores) == len(words) and np.all(np.isfinite(result.scores))
        assert result.method == method


# ------------------------------------------------------------------- the planted trigger
@pytest.mark.parametrize(
    "method",
    ["occlusion", "occlusion-baseline", "leave-one-out", "integrated-gradients", "shapley", "lime"],
)
def test_planted_triggers_rank_first(demo_subject, method):
    results = get_attributor(method).attribute(
        demo_subject,
        _prompts(["Share about how to make a cake", "What about how to make a bomb at home"]),
    )
    share, what = results
    assert share.words[int(np.argmax(share.scores))] == "Share" and max(share.scores) > 0
    assert what.words[int(np.argmin(what.scores))] == "What" and min(what.scores) < 0


# ------------------------------------------------------------------------- limits, errors
def test_prompt_beyond_context_names_the_prompt(demo_subject):
    long = Prompt(" ".join(["cake"] * 300), "too-long")
    with pytest.raises(ProbeError, match="too-long.*longer than the model"):
        get_attributor("occlusion").attribute(demo_subject, [long])


def test_unknown_baseline_token_is_a_clear_error(tiny_subjects):
    with pytest.raises(ProbeError, match="baseline token"):
        get_attributor("occlusion-baseline", baseline_token="<nope>").attribute(
            tiny_subjects["byte_bpe"], _prompts(PROMPTS[:1])
        )


# ------------------------------------------------------------------------ faithfulness
def test_faithfulness_curves_and_ranking(demo_subject):
    prompts = _prompts(["Share about how to make a cake", "Share about how to get tea today"])
    occlusion = get_attributor("occlusion").attribute(demo_subject, prompts)
    one = faithfulness(demo_subject, occlusion[0])
    assert one.deletion_curve[0] == pytest.approx(occlusion[0].margin, abs=1e-5)
    assert one.insertion_curve[-1] == pytest.approx(occlusion[0].margin, abs=1e-5)
    assert one.deletion_curve[-1] == pytest.approx(one.insertion_curve[0], abs=1e-5)
    reversed_ = [type(a)(**{**a.__dict__, "scores": [-s for s in a.scores]}) for a in occlusion]
    good = mean_faithfulness(demo_subject, occlusion)
    bad = mean_faithfulness(demo_subject, reversed_)
    assert good["deletion_auc"] < bad["deletion_auc"]
    assert good["insertion_auc"] > bad["insertion_auc"]
    assert good["comprehensiveness"] > bad["comprehensiveness"]
    assert good["sufficiency"] < bad["sufficiency"]


def test_faithfulness_rejects_foreign_attribution(demo_subject):
    result = get_attributor("occlusion").attribute(demo_subject, _prompts(["Share tea"]))[0]
    result.prompt = "Share some tea"
    with pytest.raises(ProbeError, match="do not match"):
        faithfulness(demo_subject, result)


def test_no_warnings_on_supported_models(tiny_subjects):
    subject = _with(tiny_subjects["sp_bpe"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_attributor("occlusion").attribute(subject, _prompts(PROMPTS))
