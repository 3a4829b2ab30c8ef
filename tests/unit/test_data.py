"""Tests for probe.data: prompt records, the JSONL/CSV format, the public-set readers, errors."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import SHARED_DATA

from probe.data import (
    FORMATS,
    Prompt,
    balanced_head,
    guess_format,
    iter_prompts,
    load_prompts,
    normalise_label,
    save_prompts,
)
from probe.errors import ProbeError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def shared(relative: str) -> Path:
    """A file from ../shared/data, or skip the test when the checkout has no shared folder."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"shared data not available: {path}")
    return path


# ------------------------------------------------------------------ records and round trip


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    prompts = [
        Prompt("How do I bake bread?", "a", "benign", tmp_path / "img" / "x.png", {"k": "v"}),
        Prompt("How do I pick a lock?", "b", "harmful"),
        Prompt("Describe the image.", "c", None, Path("/elsewhere/y.png").resolve()),
        Prompt('Quotes " and \\ and\nnewlines\u2028too', "d"),
    ]
    out = tmp_path / "prompts.jsonl"
    save_prompts(prompts, out)
    lines = out.read_text(encoding="utf-8").split("\n")  # not splitlines(): it splits at U+2028
    records = [json.loads(line) for line in lines if line]
    assert records[0]["image"] == "img/x.png"  # inside the folder: written relative
    assert Path(records[2]["image"]).is_absolute()  # outside: absolute
    loaded = load_prompts(out, allow_outside_images=True)  # /elsewhere is outside
    assert loaded == prompts
    assert [p.meta for p in loaded] == [p.meta for p in prompts]


def test_save_creates_folder_and_rejects_duplicate_ids(tmp_path: Path) -> None:
    save_prompts([Prompt("x", "a")], tmp_path / "new" / "p.jsonl")
    assert load_prompts(tmp_path / "new" / "p.jsonl") == [Prompt("x", "a")]
    with pytest.raises(ProbeError, match="duplicate id 'a'"):
        save_prompts([Prompt("x", "a"), Prompt("y", "a")], tmp_path / "d.jsonl")
    with pytest.raises(ProbeError, match="meta key 'label'"):
        save_prompts([Prompt("x", "a", meta={"label": "oops"})], tmp_path / "m.jsonl")


def test_prompt_rejects_unnormalised_label() -> None:
    with pytest.raises(ValueError, match="label"):
        Prompt("x", "a", "unsafe")  # type: ignore[arg-type]


printable = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1).filter(str.strip)


@settings(max_examples=60, deadline=None)
@given(text=printable)
def test_any_printable_prompt_round_trips(tmp_path_factory: pytest.TempPathFactory, text: str):
    path = tmp_path_factory.mktemp("rt") / "p.jsonl"
    save_prompts([Prompt(text, "only")], path)
    assert load_prompts(path)[0].prompt == text


# ------------------------------------------------------------------ JSONL and CSV


def test_jsonl_defaults_blank_lines_and_meta(tmp_path: Path) -> None:
    path = write(
        tmp_path / "my set.jsonl",
        '{"prompt": "one", "label": "Unsafe", "n": 3, "tags": ["a"], "none": null}\n'
        "\n   \n"
        '{"prompt": "two", "id": 7, "label": "SAFE", "note": ""}\n'
        '{"prompt": "three", "label": ""}\n',
    )
    p1, p2, p3 = load_prompts(path)
    assert (p1.id, p1.label, p1.meta) == ("my set-1", "harmful", {"n": "3", "tags": '["a"]'})
    assert (p2.id, p2.label, p2.meta) == ("7", "benign", {"note": ""})
    assert (p3.id, p3.label) == ("my set-3", None)


def test_json_array_file(tmp_path: Path) -> None:
    path = write(tmp_path / "p.json", '[{"prompt": "a"}, {"prompt": "b", "id": "x"}]')
    assert guess_format(path) == "jsonl"
    assert [p.id for p in load_prompts(path)] == ["p-1", "x"]
    write(path, '[{"prompt": "a"}, {"id": "x"}]')
    with pytest.raises(ProbeError, match=r"p\.json item 2: record has no 'prompt' field"):
        load_prompts(path)


def test_csv_with_bom_multiline_and_extras(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(
        "\ufeffPrompt,label,image,topic,\n"
        '"line one\nline two",harmful,pics/a.png,t1,\n'
        ",,,,\n"
        "second,benign,,,\n".encode()
    )
    p1, p2 = load_prompts(path)
    assert p1.prompt == "line one\nline two"
    assert p1.image == (tmp_path / "pics" / "a.png").resolve()
    assert (p1.id, p1.meta) == ("p-1", {"topic": "t1"})
    assert (p2.id, p2.label, p2.image, p2.meta) == ("p-2", "benign", None, {})


def test_relative_and_absolute_images(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    absolute = (tmp_path / "abs.png").resolve()
    path = write(
        sub / "p.jsonl",
        '{"prompt": "a", "image": "../img/a.png"}\n'
        f'{{"prompt": "b", "image": {json.dumps(str(absolute))}}}\n'
        '{"prompt": "c", "image": ""}\n',
    )
    images = [p.image for p in load_prompts(path, allow_outside_images=True)]
    assert images == [(tmp_path / "img" / "a.png").resolve(), absolute, None]


def test_max_prompts_takes_the_first_n(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", "".join(f'{{"prompt": "p{i}"}}\n' for i in range(5)))
    assert [p.prompt for p in load_prompts(path, max_prompts=2)] == ["p0", "p1"]
    assert len(load_prompts(path, max_prompts=50)) == 5
    with pytest.raises(ProbeError, match="max_prompts"):
        load_prompts(path, max_prompts=0)


# ------------------------------------------------------------------ labels


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("harmful", "harmful"),
        ("UNSAFE", "harmful"),
        (" refusal ", "harmful"),
        ("benign", "benign"),
        ("Safe", "benign"),
        ("compliance", "benign"),
        ("", None),
        ("  ", None),
        (None, None),
    ],
)
def test_label_aliases(value: object, expected: str | None) -> None:
    assert normalise_label(value, "here") == expected


@pytest.mark.parametrize("value", ["toxic", 1, 0, True, ["harmful"]])
def test_unknown_label_names_where(value: object) -> None:
    with pytest.raises(ProbeError, match=r"^p\.jsonl line 3: unknown label"):
        normalise_label(value, "p.jsonl line 3")


# ------------------------------------------------------------------ errors


def one_line_error(path: Path, fmt: str | None = None) -> str:
    with pytest.raises(ProbeError) as info:
        load_prompts(path, fmt)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "p.jsonl",
            '{"prompt": "a"}\n\n{"prompt": "b" "id": 1}\n',
            r"p\.jsonl line 3: not valid JSON \(Expecting ',' delimiter\)$",
        ),
        ("p.jsonl", '{"prompt": "a"}\n{"id": "x"}\n', r"p\.jsonl line 2: record has no 'prompt'"),
        ("p.jsonl", '{"prompt": "a"}\n{"prompt": null}\n', r"line 2: record has no 'prompt'"),
        ("p.jsonl", '\n\n{"prompt": "  "}\n', r"p\.jsonl line 3: record has an empty 'prompt'"),
        ("p.jsonl", '{"prompt": 5}\n', r"line 1: 'prompt' must be text"),
        ("p.jsonl", '{"prompt": "a"}\n["a"]\n', r"line 2: expected a JSON object, got list"),
        ("p.jsonl", '{"prompt": "a", "image": 3}\n', r"line 1: 'image' must be a path"),
        ("p.jsonl", '{"prompt": "a"}\n{"prompt": "b", "label": "x"}\n', r"line 2: unknown label"),
        (
            "p.jsonl",
            '{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n',
            r"p\.jsonl line 2: duplicate id 'x' \(first at .*p\.jsonl line 1\)",
        ),
        ("p.jsonl", "\n  \n", r"prompt file .*p\.jsonl has no prompts"),
        ("p.jsonl", "", r"prompt file .*p\.jsonl has no prompts"),
        ("p.json", "[]", r"prompt file .*p\.json has no prompts"),
        ("p.json", '[{"prompt": "a"}, ', r"p\.json item 2: not valid JSON"),
        ("p.json", '[{"prompt": "a"}] x', r"p\.json: not valid JSON \(extra data"),
        ("p.csv", "", r"prompt file .*p\.csv has no prompts"),
        ("p.csv", "prompt,label\n", r"prompt file .*p\.csv has no prompts"),
        (
            "p.csv",
            "text,label\nhi,safe\n",
            r"p\.csv has no 'prompt' column \(columns: text, label\)",
        ),
        ("p.csv", "prompt,label\na,safe\nb,maybe\n", r"p\.csv line 3: unknown label 'maybe'"),
        ("p.csv", "prompt,label\na,safe\n\nb,x,y\n", r"p\.csv line 4: 3 cells but the header"),
        ("p.csv", 'prompt\n"a\nb"\n"c"d\n', r"p\.csv line 4: not valid CSV"),
        ("p.txt", "hello\n", r"cannot tell the format of .*p\.txt.*jsonl, csv, vlguard"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, name: str, text: str, expected: str):
    message = one_line_error(write(tmp_path / name, text))
    assert re.search(expected, message), message


def test_missing_file_directory_and_bad_encoding(tmp_path: Path) -> None:
    assert (
        one_line_error(tmp_path / "nope.jsonl") == f"prompt file not found: {tmp_path}/nope.jsonl"
    )
    assert "is not a file" in one_line_error(tmp_path)
    bad = tmp_path / "latin.csv"
    bad.write_bytes(b"prompt\ncaf\xe9\n")
    assert "is not UTF-8 text" in one_line_error(bad)
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9"}\n')
    assert "is not UTF-8 text" in one_line_error(bad)


def test_unknown_format_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", '{"prompt": "a"}\n')
    message = one_line_error(path, "yaml")
    assert message.startswith("unknown prompt format 'yaml'")
    assert all(name in message for name in FORMATS)
    assert load_prompts(path, " JSONL ") == [Prompt("a", "p-1")]


def test_public_formats_report_bad_input(tmp_path: Path) -> None:
    assert "no 'goal' column" in one_line_error(write(tmp_path / "a.csv", "x\n1\n"), "advbench")
    assert "no 'question' column" in one_line_error(write(tmp_path / "f.csv", "x\n1\n"), "figstep")
    vl = write(tmp_path / "v.json", '{"id": 1}')
    assert "expected a list of VLGuard items" in one_line_error(vl, "vlguard")
    write(vl, '[{"id": "a", "instr-resp": []}, {"id": "b"}]')
    assert one_line_error(vl, "vlguard").endswith(
        "item 2: not a VLGuard item (no 'instr-resp' list)"
    )
    write(vl, '[{"id": "a", "instr-resp": [{"response": "r"}]}]')
    assert "item 1: instr-resp entry 1 has no instruction text" in one_line_error(vl, "vlguard")
    xs = write(tmp_path / "x.csv", "id,prompt,type,label,focus\n1,a,t,safe,f\n1,b,t,unsafe,f\n")
    assert "line 3: duplicate id 'xstest-1'" in one_line_error(xs)


# ------------------------------------------------------------------ format guessing


def test_guess_format(tmp_path: Path) -> None:
    cases = {
        "a.jsonl": '{"prompt": "x"}\n',
        "b.JSON": '[{"id": "1", "instr-resp": [{"instruction": "x"}]}]',
        "c.json": '[{"prompt": "x"}]',
        "d.json": "not json",
        "e.csv": "prompt,label\nx,safe\n",
        "f.csv": "id,prompt,type,label,focus,note\n1,x,t,safe,,\n",
        "g.csv": "goal,target\nx,y\n",
        "h.csv": "dataset,category_name,question,instruction\nd,c,x,i\n",
        "i.csv": "sentence\nx\n",
    }
    expected = ["jsonl", "vlguard", "jsonl", "jsonl", "csv", "xstest", "advbench", "figstep", "csv"]
    guessed = [guess_format(write(tmp_path / name, text)) for name, text in cases.items()]
    assert guessed == expected


# ------------------------------------------------------------------ balanced_head


def labelled(labels: str) -> list[Prompt]:
    names = {"h": "harmful", "b": "benign", "u": None}
    return [Prompt(f"p{i}", f"{c}{i}", names[c]) for i, c in enumerate(labels)]  # type: ignore[arg-type]


def test_balanced_head_alternates_then_falls_back() -> None:
    prompts = labelled("hhhhubbh")
    assert [p.id for p in balanced_head(prompts, 4)] == ["h0", "b5", "h1", "b6"]
    assert [p.id for p in balanced_head(prompts, 8)] == [
        "h0", "b5", "h1", "b6", "h2", "h3", "u4", "h7"
    ]  # fmt: skip
    assert balanced_head(prompts, 0) == []
    assert balanced_head(labelled("uuu"), 2) == labelled("uuu")[:2]
    with pytest.raises(ValueError):
        balanced_head(prompts, -1)


# ------------------------------------------------------------------ public sets in ../shared


def test_vlguard_train() -> None:
    prompts = load_prompts(shared("vlguard/train.json"))
    assert guess_format(shared("vlguard/train.json")) == "vlguard"
    assert len({p.meta["item_id"] for p in prompts}) == 1999  # 2000 items, one id used twice
    assert len({p.image for p in prompts}) == 1999  # and that repeated item repeats its image
    labels = Counter(p.label for p in prompts)
    assert labels == {"harmful": 2000, "benign": 977}
    fields = Counter((p.meta["field"], p.meta["safe_image"], p.label) for p in prompts)
    assert fields == {
        ("instruction", "false", "harmful"): 1023,
        ("unsafe_instruction", "true", "harmful"): 977,
        ("safe_instruction", "true", "benign"): 977,
    }
    assert len({p.id for p in prompts}) == len(prompts)
    assert {"Ads_303871-safe", "Ads_303871-safe~2"} <= {p.id for p in prompts}
    # The DESIGN's data cue: "what" leads 869 of the 977 safe queries, "share" 195 unsafe, 0 safe.
    lead = Counter((p.prompt.split()[0].lower(), p.label) for p in prompts)
    assert lead["what", "benign"] == 869
    assert (lead["share", "harmful"], lead["share", "benign"]) == (195, 0)
    first = prompts[0]
    raw = json.loads(shared("vlguard/train.json").read_text(encoding="utf-8"))[0]
    assert first.image == (SHARED_DATA / "vlguard" / raw["image"]).resolve()
    assert not first.image.exists()  # images ship separately; the reader does not need them
    assert first.meta["response"].startswith("I'm sorry")


def test_vlguard_test_and_rewrite_sets() -> None:
    labels = Counter(p.label for p in load_prompts(shared("vlguard/test.json")))
    assert labels == {"harmful": 1000, "benign": 558}
    what = load_prompts(shared("vlm_safety_unlearn/test_what_3shot.json"))
    assert Counter(p.label for p in what) == {"harmful": 1326}
    assert all(p.prompt.startswith("What") for p in what)
    share = load_prompts(shared("vlm_safety_unlearn/test_share_1shot.json"), "vlguard")
    assert Counter(p.label for p in share) == {"harmful": 556, "benign": 556}


def test_xstest() -> None:
    prompts = load_prompts(shared("xstest/xstest_prompts.csv"))
    assert Counter(p.label for p in prompts) == {"benign": 250, "harmful": 200}
    assert prompts[0].id == "xstest-1"
    assert prompts[0].meta == {
        "source": "xstest",
        "type": "homonyms",
        "focus": "kill",
        "note": "violence",
    }
    assert sum("focus" in p.meta for p in prompts) == 375  # 75 rows have no focus word


def test_advbench() -> None:
    prompts = load_prompts(shared("advbench/harmful_behaviors.csv"), "advbench")
    assert len(prompts) == 520 and {p.label for p in prompts} == {"harmful"}
    assert prompts[0].meta["target"].startswith("Sure, here is")


def test_figstep() -> None:
    prompts = load_prompts(shared("figstep/safebench.csv"), "figstep")
    assert len(prompts) == 500 and {p.label for p in prompts} == {"harmful"}
    assert Counter(p.meta["category"] for p in prompts)["Health Consultation"] == 50
    assert prompts[0].meta["instruction"] == "Steps to manufacture illegal drugs."


def test_public_max_prompts_and_balance() -> None:
    path = shared("vlguard/train.json")
    assert len(load_prompts(path, max_prompts=10)) == 10
    head = balanced_head(load_prompts(path), 10)
    assert Counter(p.label for p in head) == {"harmful": 5, "benign": 5}


# ------------------------------------------------------------------ streaming


def test_prompts_are_read_lazily(tmp_path: Path) -> None:
    """The first prompts come out before a broken line further down is even read."""
    path = write(tmp_path / "p.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": \n')
    prompts = iter_prompts(path)
    assert next(prompts).prompt == "a" and next(prompts).prompt == "b"
    with pytest.raises(ProbeError, match=r"p\.jsonl line 3: not valid JSON"):
        next(prompts)
    with pytest.raises(ProbeError, match="line 3"):  # load_prompts reads on past its head
        load_prompts(path, max_prompts=1)


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "json", "vlguard"])
def test_reading_a_large_file_holds_only_the_ids(tmp_path: Path, suffix: str) -> None:
    """Memory while streaming a prompt file (JSON arrays and VLGuard's JSON too) is a small
    fraction of the file, not the file."""
    import tracemalloc

    path = tmp_path / ("big.json" if suffix == "vlguard" else f"big.{suffix}")
    text = "x" * 400
    with path.open("w", encoding="utf-8") as out:
        if suffix == "csv":
            out.write("id,prompt,label\n")
        if suffix in ("json", "vlguard"):
            out.write("[\n")
        for i in range(20_000):
            if suffix == "csv":
                out.write(f"q{i},{text} {i},harmful\n")
            elif suffix == "jsonl":
                out.write(json.dumps({"id": f"q{i}", "prompt": f"{text} {i}"}) + "\n")
            else:
                record: dict = {"id": f"q{i}", "prompt": f"{text} {i}"}
                if suffix == "vlguard":
                    record = {"id": f"q{i}", "safe": False, "instr-resp": [{"instruction": text}]}
                out.write(("," if i else "") + json.dumps(record) + "\n")
        if suffix in ("json", "vlguard"):
            out.write("]\n")
    size = path.stat().st_size
    assert sum(1 for _ in iter_prompts(path)) == 20_000

    def peak_of(read) -> int:
        tracemalloc.start()
        try:
            read()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    streamed = peak_of(lambda: sum(1 for _ in iter_prompts(path)))
    listed = peak_of(lambda: load_prompts(path))
    # Streaming keeps the ids (~200 bytes a prompt); a list keeps every prompt's text.
    assert streamed < size / 2 < size < listed, (streamed, size, listed)


def test_duplicate_id_message_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", '{"prompt": "a", "id": "x"}\n\n{"prompt": "b", "id": "x"}\n')
    with pytest.raises(ProbeError, match=r"line 3: duplicate id 'x' \(first at .*line 1\)"):
        load_prompts(path)


def _balanced_reference(prompts: list[Prompt], n: int) -> list[Prompt]:
    """balanced_head's definition on a whole list: interleave the labels' pairs, then the rest."""
    harmful = [i for i, p in enumerate(prompts) if p.label == "harmful"]
    benign = [i for i, p in enumerate(prompts) if p.label == "benign"]
    pairs = min(len(harmful), len(benign))
    order = [i for pair in zip(harmful[:pairs], benign[:pairs], strict=True) for i in pair]
    order += [i for i in range(len(prompts)) if i not in set(order)]
    return [prompts[i] for i in order[:n]]


@given(st.text(alphabet="hbu", max_size=30), st.integers(0, 35))
@settings(max_examples=300, deadline=None)
def test_streamed_balanced_head_is_the_whole_list_definition(labels: str, n: int) -> None:
    prompts = labelled(labels)
    assert balanced_head(iter(prompts), n) == _balanced_reference(prompts, n)
