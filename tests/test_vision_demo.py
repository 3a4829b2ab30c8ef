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
def demo_vlm_run(tmp_path_factory):
    import os

    from probe.audit import AuditConfig, run_audit
    from probe.demos.vision import demo_vlm_prompts

    if not os.environ.get("PROBE_CACHE_DIR"):
        os.environ["PROBE_CACHE_DIR"] = str(tmp_path_factory.mktemp("probe-cache"))
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
