"""VisionSubject on tiny random VLMs of two families (LLaVA, Idefics3), image attribution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_vlms import VLM_FAMILIES, build_tiny_vlm, write_test_images

from probe.attribution import REGISTRY, get_attributor
from probe.attribution.image import (
    attribute_images,
    integrated_gradients_map,
    occlusion_map,
    reliance_share,
)
from probe.data import Prompt
from probe.errors import ProbeError
from probe.query import Query
from probe.subject.vision import (
    IMAGE_CACHE_SIZE,
    ImageTokens,
    VisionSubject,
    check_images,
    load_subject_any,
    open_image,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TEXTS = (
    "Share about what is shown in this picture please",
    "Tell me about it",
    "What is in the image?",
)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_test_images(tmp_path_factory.mktemp("vlm-images"), n=3)


@pytest.fixture(scope="module", params=VLM_FAMILIES)
def vlm(request, tmp_path_factory):
    folder = build_tiny_vlm(tmp_path_factory.mktemp(request.param), request.param)
    subject = load_subject_any(folder)
    assert isinstance(subject, VisionSubject)
    subject.batch_size = 4
    return subject


def _hf_margin(subject: VisionSubject, prompt: Query) -> float:
    """The margin through the model's own pixel_values path (no probe image handling)."""
    openings, n_refusal = subject.opening_ids(subject.margin_config)
    inputs = subject.processor(
        text=subject.chat_text(prompt),
        images=open_image(prompt.image),
        add_special_tokens=False,
        return_tensors="pt",
    )
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    length = inputs["input_ids"].shape[1]
    scores = []
    for opening in openings:
        ids = torch.cat([inputs["input_ids"], torch.tensor([opening])], 1)
        with torch.no_grad():
            logp = subject.model(input_ids=ids, **extra).logits[0].float().log_softmax(-1)
        scores.append(sum(logp[length - 1 + i, t].item() for i, t in enumerate(opening)))
    scores = torch.tensor(scores)
    return float(torch.logsumexp(scores[:n_refusal], 0) - torch.logsumexp(scores[n_refusal:], 0))


def test_words_align_and_image_tokens_are_never_words(vlm, images):
    enc = vlm.encode(Query(TEXTS[0], images[0]))
    assert [w.text for w in enc.words] == TEXTS[0].split()
    for i, word in enumerate(enc.words):
        positions = enc.word_token_positions(i)
        assert positions, word
        text = vlm.tokenizer.decode([enc.input_ids[p] for p in positions])
        assert text.replace(" ", "").lower() == word.text.lower()
    image_positions = ImageTokens.positions(enc.input_ids)
    assert image_positions
    assert all(enc.token_word[i] == -1 for i in image_positions)


def test_margins_match_the_models_own_pixel_path(vlm, images):
    prompts = [Query(t, images[i]) for i, t in enumerate(TEXTS)]
    ours = vlm.prompt_margins(prompts)
    reference = [_hf_margin(vlm, p) for p in prompts]
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_batched_equals_unbatched_margins(vlm, images):
    prompts = [Query(t, images[i % 3]) for i, t in enumerate(TEXTS * 2)]
    prompts.append("Tell me about it")  # text only, no image
    batched = vlm.prompt_margins(prompts)
    single = np.array([vlm.prompt_margins([p])[0] for p in prompts])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    enc = vlm.encode(prompts[0])
    variants = [list(enc.input_ids)] + [enc.without_words({i}) for i in range(len(enc.words))]
    np.testing.assert_allclose(
        vlm.shared_prefix_margins(enc.input_ids, variants), vlm.margins(variants), atol=1e-4
    )


def test_text_only_prompt_has_no_image_tokens(vlm):
    enc = vlm.encode("Tell me about it")
    assert not ImageTokens.positions(enc.input_ids)
    assert np.isfinite(vlm.prompt_margins(["Tell me about it"])[0])


def test_edits_keep_the_image():
    from probe.words import delete_word, replace_word, split_words

    query = Query("Tell about this photo", Path("/x.png"))
    lead = split_words(query.text)[0]
    assert replace_word(query, lead, "share") == Query("Share about this photo", Path("/x.png"))
    assert delete_word(query, lead) == Query("about this photo", Path("/x.png"))
    assert replace_word("Tell about it", lead, "share") == "Share about it"  # str stays str


def test_generate_batched_equals_single(vlm, images):
    prompts = [Query(t, images[i]) for i, t in enumerate(TEXTS)]
    assert vlm.generate(prompts, 6) == [vlm.generate([p], 6)[0] for p in prompts]


def test_occlusion_map_equals_brute_force_loop(vlm, images):
    prompt = Query(TEXTS[0], images[1])
    ids = vlm.encode(prompt).input_ids
    heat, base = occlusion_map(vlm, ids, patch=8)
    assert heat.shape == (4, 4)
    assert base == pytest.approx(_hf_margin(vlm, prompt), abs=1e-4)
    # brute force: one occluded image at a time through the model's own pixel path
    inputs = vlm.processor(
        text=vlm.chat_text(prompt),
        images=open_image(prompt.image),
        add_special_tokens=False,
        return_tensors="pt",
    )
    openings, n_refusal = vlm.opening_ids(vlm.margin_config)
    length = inputs["input_ids"].shape[1]
    for r in range(4):
        for c in range(4):
            pixels = inputs["pixel_values"].clone()
            pixels[..., r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] = 0.0
            extra = {
                k: v
                for k, v in inputs.items()
                if k not in ("input_ids", "attention_mask", "pixel_values")
            }
            scores = []
            for opening in openings:
                ids_t = torch.cat([inputs["input_ids"], torch.tensor([opening])], 1)
                with torch.no_grad():
                    logits = vlm.model(input_ids=ids_t, pixel_values=pixels, **extra).logits
                logp = logits[0].float().log_softmax(-1)
                scores.append(sum(logp[length - 1 + i, t].item() for i, t in enumerate(opening)))
            s = torch.tensor(scores)
            margin = float(torch.logsumexp(s[:n_refusal], 0) - torch.logsumexp(s[n_refusal:], 0))
            assert heat[r, c] == pytest.approx(base - margin, abs=1e-4)


def test_integrated_gradients_completeness(vlm, images):
    ids = vlm.encode(Query(TEXTS[1], images[2])).input_ids
    heat = integrated_gradients_map(vlm, ids, patch=8, n_steps=32)
    assert heat.shape == (4, 4)
    own = vlm.pixels_of(ids)
    grey = {k: v.clone() for k, v in own.items()}
    grey["pixel_values"] = torch.full_like(grey["pixel_values"], 1e-6)
    full = vlm.image_margins(ids, own)[0] - vlm.image_margins(ids, grey)[0]
    assert heat.sum() == pytest.approx(full, abs=1e-3 + 0.05 * abs(full))


def test_attribute_images_adds_maps_and_reliance(vlm, images, tmp_path):
    from probe.attribution import get_attributor

    prompts = [Prompt(TEXTS[0], "a", "harmful", image=images[0]), Prompt(TEXTS[1], "b", "benign")]
    attributions = get_attributor("occlusion").attribute(vlm, prompts)
    attribute_images(vlm, prompts, attributions)
    record = json.loads(json.dumps(attributions[0].to_record()))
    assert np.asarray(record["image_map"]).shape == (4, 4)
    assert np.asarray(record["image_map_ig"]).shape == (4, 4)
    assert record["image"] == str(images[0].resolve())
    assert 0.0 <= record["text_reliance"] <= 1.0
    assert "image_map" not in attributions[1].to_record()


def test_reliance_share_definition():
    assert reliance_share([1.0, -1.0], np.array([[2.0, 0.0]])) == pytest.approx(0.5)
    assert reliance_share([0.0], np.zeros((2, 2))) is None


def test_missing_and_unreadable_images_name_the_prompt(tmp_path):
    with pytest.raises(ProbeError, match="prompt p1: image not found"):
        check_images([Prompt("Tell me", "p1", image=tmp_path / "nope.png")])
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ProbeError, match="prompt p2: cannot read image"):
        check_images([Prompt("Tell me", "p2", image=bad)])


def test_bad_image_in_a_prompt_file_is_a_clean_cli_error(tmp_path, capsys):
    from probe.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "x7", "prompt": "Tell me", "image": "gone.png"}) + "\n")
    folder = build_tiny_vlm(tmp_path / "m", "llava")
    code = main(
        [
            "attribute",
            "--model",
            str(folder),
            "--prompts",
            str(prompts),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code != 0
    assert "prompt x7: image not found" in capsys.readouterr().err


def test_leave_one_out_variants_keep_their_image(vlm, images):
    """Each leave-one-out score is margin(prompt) - margin(prompt minus the word), both with the
    prompt's own image, through the model's own pixel path (a variant that lost its image would
    measure "remove the image and the word")."""
    from probe.attribution import get_attributor
    from probe.words import delete_word

    prompt = Prompt(TEXTS[0], "a", "harmful", image=images[2])
    (record,) = get_attributor("leave-one-out").attribute(vlm, [prompt])
    base = _hf_margin(vlm, prompt.query)
    assert record.margin == pytest.approx(base, abs=1e-4)
    encoded = vlm.encode(prompt.query)
    for index, word in enumerate(encoded.words):
        variant = delete_word(prompt.query, word)
        assert variant.image == prompt.image
        expected = base - _hf_margin(vlm, variant)
        assert record.scores[index] == pytest.approx(expected, abs=1e-4), word.text


# ------------------------------------------- queries: the image is part of what is asked
def test_same_text_different_images_are_different_queries(vlm, images):
    first, second = Query(TEXTS[0], images[0]), Query(TEXTS[0], images[1])
    assert first != second and len({first, second, Query(TEXTS[0], images[0])}) == 2
    ours = vlm.prompt_margins([first, second])
    assert ours[0] != pytest.approx(ours[1], abs=1e-4)
    np.testing.assert_allclose(ours, [_hf_margin(vlm, first), _hf_margin(vlm, second)], atol=1e-4)


def test_image_feature_cache_is_bounded(vlm, tmp_path):
    many = write_test_images(tmp_path / "many", n=5, seed=3)
    vlm.image_cache_size = 2
    try:
        encoded = []
        for path in many:
            encoded.append(vlm.encode(Query(TEXTS[1], path)))
            assert len(vlm._cache) <= 2
        # evicted images are computed again when a sequence needs them
        again = vlm.margins([e.input_ids for e in encoded])
        assert len(vlm._cache) <= 2
        np.testing.assert_allclose(again, [_hf_margin(vlm, e.query) for e in encoded], atol=1e-4)
    finally:
        vlm.image_cache_size = IMAGE_CACHE_SIZE


# ------------------- every attribution method on image prompts against a brute-force reference
BASELINE_FREE = ("occlusion", "leave-one-out")


def _reference_scores(vlm, method: str, prompt: Prompt, record) -> np.ndarray | None:
    """The brute-force scores of ``method`` on an image prompt (None: no pointwise reference)."""
    import vlm_reference as ref

    from probe.attribution.base import baseline_token_id
    from probe.words import delete_word

    enc = vlm.encode(prompt.query)
    ids, extra = ref.processor_inputs(vlm, prompt.query)
    assert ref.plain_ids(vlm, enc) == ids  # probe's sequence is the processor's, image keyed
    base = ref.margin_of_ids(vlm, ids, extra)
    assert record.margin == pytest.approx(base, abs=1e-4)
    unk = baseline_token_id(vlm, None)
    own = [(t, w) for t, w in zip(ids, enc.token_word, strict=True)]
    if method == "occlusion":
        return np.array(
            [
                base - ref.margin_of_ids(vlm, [t for t, w in own if w != i], extra)
                for i in range(len(enc.words))
            ]
        )
    if method == "occlusion-baseline":
        return np.array(
            [
                base - ref.margin_of_ids(vlm, [unk if w == i else t for t, w in own], extra)
                for i in range(len(enc.words))
            ]
        )
    if method == "leave-one-out":
        scores = []
        for word in enc.words:
            variant = delete_word(prompt.query, word)
            assert variant.image == prompt.image
            scores.append(base - _hf_margin(vlm, variant))
        return np.array(scores)
    if method == "gradient-x-input":
        return ref.gradient_x_input(vlm, enc)
    if method == "integrated-gradients":
        baseline = ref.margin_of_ids(vlm, [unk if w >= 0 else t for t, w in own], extra)
        assert record.extra["baseline_margin"] == pytest.approx(baseline, abs=1e-4)
        # completeness against the reference margins: sum(scores) = margin(x) - margin(baseline)
        assert sum(record.scores) == pytest.approx(
            base - baseline, abs=2e-3 + 0.02 * abs(base - baseline)
        )
        return ref.integrated_gradients(vlm, enc, unk)
    if method in ("shapley", "lime"):
        # every coalition keeps the image: the empty coalition is the image with no words
        empty = ref.margin_of_ids(vlm, [t for t, w in own if w < 0], extra)
        assert record.extra["empty_margin"] == pytest.approx(empty, abs=1e-4)
        if method == "shapley":  # efficiency holds exactly for sampled Shapley values
            assert sum(record.scores) == pytest.approx(base - empty, abs=1e-4)
        return None
    raise AssertionError(f"no reference for {method}: add one (or a ProbeError) to this test")


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_on_image_prompts_equals_a_reference(vlm, images, method):
    prompt = Prompt(TEXTS[0], "a", "harmful", image=images[1])
    attributor = get_attributor(method, **({"n_samples": 20} if method == "lime" else {}))
    if attributor.no_images_because is not None:
        with pytest.raises(
            ProbeError, match=f"prompt a: method '{method}' cannot score prompts with images: .+"
        ):
            attributor.attribute(vlm, [prompt])
        return
    (record,) = attributor.attribute(vlm, [prompt])
    assert record.query == prompt.query  # the record names its image
    expected = _reference_scores(vlm, method, prompt, record)
    if expected is not None:
        tol = 2e-3 if method == "integrated-gradients" else 1e-4
        np.testing.assert_allclose(
            record.scores, expected, atol=tol, rtol=0.02 if tol > 1e-4 else 0
        )


# ------------------------------------------------------------------------- image controls
def test_unrelated_images_are_deterministic_and_prefer_another_label(images):
    from probe.pipeline import unrelated_images

    prompts = [
        Prompt("a", "h1", "harmful", image=images[0]),
        Prompt("b", "h2", "harmful", image=images[1]),
        Prompt("c", "t", "benign"),
        Prompt("d", "b1", "benign", image=images[2]),
        Prompt("e", "b2", "benign", image=images[2]),
    ]
    chosen = unrelated_images(prompts)
    assert chosen == {"h1": images[2], "h2": images[2], "b1": images[0], "b2": images[0]}
    assert unrelated_images(prompts) == chosen
    assert unrelated_images([Prompt("a", "x", image=images[0])]) == {}


def test_image_controls_equal_the_pixel_path(vlm, images, tmp_path):
    from PIL import Image

    from probe.pipeline import image_controls

    prompts = [
        Prompt(TEXTS[0], "a", "harmful", image=images[0]),
        Prompt(TEXTS[1], "b", "benign", image=images[1]),
        Prompt(TEXTS[2], "c", "benign"),
    ]
    controls = image_controls(vlm, prompts, {"a": images[1]})
    assert set(controls) == {"a", "b"} and controls["b"]["unrelated"] is None
    grey = tmp_path / "grey.png"
    Image.new("RGB", Image.open(images[0]).size, (128, 128, 128)).save(grey)
    expected = {
        "own": _hf_margin(vlm, prompts[0].query),
        "blank": _hf_margin(vlm, Query(TEXTS[0], grey)),
        "unrelated": _hf_margin(vlm, Query(TEXTS[0], images[1])),
    }
    for name, value in expected.items():
        assert controls["a"][name] == pytest.approx(value, abs=1e-4), name


def test_faithfulness_curves_keep_the_image(vlm, images):
    from probe.attribution.faithfulness import faithfulness

    prompt = Prompt(TEXTS[0], "a", "harmful", image=images[2])
    (record,) = get_attributor("occlusion").attribute(vlm, [prompt])
    result = faithfulness(vlm, record)
    assert result.deletion_curve[0] == pytest.approx(_hf_margin(vlm, prompt.query), abs=1e-4)
    assert result.insertion_curve[-1] == pytest.approx(result.deletion_curve[0], abs=1e-4)
