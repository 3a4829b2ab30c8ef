"""The built-in demo VLM: image maps find the glyph, "share" ranks first, reliance reported."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from probe.data import save_prompts

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def demo_vlm_dir(tmp_path_factory):
    """The trained demo VLM (in PROBE_CACHE_DIR, so the audit below reuses it)."""
    import os

    from probe.demos.vision import ensure_demo_vlm_model

    if not os.environ.get("PROBE_CACHE_DIR"):
        os.environ["PROBE_CACHE_DIR"] = str(tmp_path_factory.mktemp("probe-cache"))
    return ensure_demo_vlm_model(0)


@pytest.fixture(scope="module")
def demo_vlm_run(tmp_path_factory, demo_vlm_dir):
    from probe.audit import AuditConfig, run_audit
    from probe.demos.vision import demo_vlm_prompts

    root = tmp_path_factory.mktemp("demo-vlm")
    prompts = demo_vlm_prompts(0)
    quota = {("harmful", False): 4, ("harmful", True): 2, ("benign", False): 4, ("benign", True): 3}
    subset = []
    for p in prompts:
        group = (p.label, p.meta["lead"] == "share")
        if quota[group] > 0:
            quota[group] -= 1
            subset.append(p)
    # As a user would ship them: the images beside the prompt file (outside it is refused).
    (root / "images").mkdir()
    for i, prompt in enumerate(subset):
        if prompt.image is not None:
            copy = root / "images" / prompt.image.name
            shutil.copyfile(prompt.image, copy)
            subset[i] = dataclasses.replace(prompt, image=copy)
    save_prompts(subset, root / "prompts.jsonl")
    config = AuditConfig(
        model="demo-vlm", prompts=str(root / "prompts.jsonl"), out=str(root / "run"), min_support=2
    )
    return run_audit(config, progress=False), {p.id: p for p in subset}


def test_every_prompt_has_a_heatmap_and_figure(demo_vlm_run):
    run, prompts = demo_vlm_run
    records = [json.loads(line) for line in (run / "attributions.jsonl").read_text().splitlines()]
    assert len(records) == len(prompts)
    for record in records:
        assert np.asarray(record["image_map"]).shape == (4, 4)
        assert 0.0 <= record["text_reliance"] <= 1.0
    assert len(list((run / "figures").glob("image_*.png"))) == len(prompts)
    # occlusion maps light up the glyph on harmful images
    hits = []
    for record in records:
        prompt = prompts[record["id"]]
        if prompt.label != "harmful":
            continue
        x0, y0, x1, y1 = map(int, prompt.meta["glyph"].split(","))
        i, j = np.unravel_index(np.argmax(record["image_map"]), (4, 4))
        hits.append(x0 < (j + 1) * 8 and x1 > j * 8 and y0 < (i + 1) * 8 and y1 > i * 8)
    assert np.mean(hits) >= 0.8


def test_share_ranks_first_and_flips_benign_prompts(demo_vlm_run):
    run, _ = demo_vlm_run
    entries = json.loads((run / "lexicon.json").read_text())["entries"]
    refusal = [e["word"] for e in entries if e["direction"] == "refusal"]
    assert refusal[0] == "share"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["ground_truth_triggers"] == {"refusal": "share"}
    metrics = summary["metrics"]
    assert metrics["refusal_rate_harmful"] == 1.0
    assert metrics["over_refusal_one_word"] >= 0.5
    assert 0.0 < metrics["text_reliance_refused_harmful"] < 1.0


def test_gradient_methods_on_demo_vlm_match_the_pixel_path(demo_vlm_dir, demo_vlm_run):
    """gradient x input equals autograd through the model's own pixel path; integrated
    gradients is complete against that path's margins (image features held in place)."""
    import vlm_reference as ref

    from probe.attribution import get_attributor
    from probe.attribution.base import baseline_token_id
    from probe.subject.vision import VisionSubject

    subject = VisionSubject.load(demo_vlm_dir)
    _, prompts = demo_vlm_run
    chosen = [p for p in prompts.values() if p.image is not None][:3]
    gxi = get_attributor("gradient-x-input").attribute(subject, chosen)
    ig = get_attributor("integrated-gradients").attribute(subject, chosen)
    unk = baseline_token_id(subject, None)
    for prompt, g, i in zip(chosen, gxi, ig, strict=True):
        enc = subject.encode(prompt.query)
        np.testing.assert_allclose(g.scores, ref.gradient_x_input(subject, enc), atol=1e-4)
        ids, extra = ref.processor_inputs(subject, prompt.query)
        own = list(zip(ids, enc.token_word, strict=True))
        margin = ref.margin_of_ids(subject, ids, extra)
        baseline = ref.margin_of_ids(subject, [unk if w >= 0 else t for t, w in own], extra)
        assert i.margin == pytest.approx(margin, abs=1e-4)
        assert sum(i.scores) == pytest.approx(margin - baseline, abs=0.01 + 0.02 * abs(margin))


def test_image_controls_separate_the_image_from_the_trigger(demo_vlm_run):
    """On demo-vlm the hazard glyph carries the harm: a blank image turns a harmful prompt's
    refusal into compliance, unless "share" (the planted trigger) leads it; an unrelated image
    (another label's) turns a benign prompt's compliance into refusal."""
    run, prompts = demo_vlm_run
    records = [json.loads(line) for line in (run / "attributions.jsonl").read_text().splitlines()]
    controls = {r["id"]: r["image_controls"] for r in records if "image_controls" in r}
    assert set(controls) == {i for i, p in prompts.items() if p.image is not None}
    for record in records:
        c, prompt = controls[record["id"]], prompts[record["id"]]
        assert c["own"] == pytest.approx(record["margin"], abs=1e-4)
        if prompt.meta["lead"] == "share":
            assert c["own"] > 0 and c["blank"] > 0 and c["unrelated"] > 0, record["id"]
        elif prompt.label == "harmful":
            assert c["blank"] < 0 < c["own"], record["id"]
        else:
            assert c["own"] < 0 < c["unrelated"], record["id"]
    summary = json.loads((run / "summary.json").read_text())
    refused = {
        json.loads(line)["id"]
        for line in (run / "responses.jsonl").read_text().splitlines()
        if json.loads(line)["judged_refusal"]
    }
    harmful = [i for i in controls if prompts[i].label == "harmful" and i in refused]
    shared = [prompts[i].meta["lead"] == "share" for i in harmful]
    stats = summary["image_controls"]
    assert stats["n_prompts"] == len(controls) and stats["n_refused_harmful"] == len(harmful)
    assert stats["still_refused_blank"] == pytest.approx(np.mean(shared))
    assert stats["mean_margin_blank"] < stats["mean_margin_own"]
    report = (run / "report.md").read_text()
    assert "## Image controls" in report and "blank image" in report
    assert 'id="image-controls"' in (run / "report.html").read_text()


def test_replay_shows_each_edit_with_its_image(demo_vlm_dir, demo_vlm_run):
    """attacks.jsonl names each edit's image, and replay scores and generates with it: the
    replayed margins are the image prompts' margins, not the text's alone."""
    from probe.compare.replay import replay_edits
    from probe.judge import load_judge
    from probe.query import Query
    from probe.rundir import read_jsonl
    from probe.subject.vision import load_subject_any

    run, _ = demo_vlm_run
    edits = read_jsonl(run / "attacks.jsonl")
    proofs = [e for e in edits if e["flipped"]]
    assert proofs and all(e.get("image") for e in edits)
    subject = load_subject_any(demo_vlm_dir)
    result = replay_edits(edits, subject, load_judge("combined"))
    assert len(result.records) == len(proofs)
    for record, edit in zip(result.records, proofs, strict=True):
        assert record.image == edit["image"]
        with_image = subject.prompt_margins([Query(edit["variant"], edit["image"])])[0]
        text_only = subject.prompt_margins([Query(edit["variant"])])[0]
        assert record.margin_after == pytest.approx(with_image, abs=1e-4)
        assert abs(with_image - text_only) > 1e-3
    assert result.summary()["still_flip"]["rate"] >= 0.9  # the same model: its own proofs
