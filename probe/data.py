"""Prompt records and the readers that turn prompt files into them.

A prompt file is JSONL or CSV with the fields ``prompt`` (required), ``id``, ``label``
(``harmful`` | ``benign``) and ``image`` (a path relative to the file); any other field is kept
as string metadata. Readers for the public safety sets (VLGuard, XSTest, AdvBench, FigStep) map
them onto the same record so that every later stage sees one shape. Bad input raises
``ProbeError`` with a one-line message that names the file and the line (or item).
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from probe.errors import ProbeError
from probe.errors import read_text as _read_text
from probe.query import Query

Label = Literal["harmful", "benign"]

FORMATS = ("jsonl", "csv", "vlguard", "xstest", "advbench", "figstep")

FIELDS = ("prompt", "id", "label", "image")

_LABEL_ALIASES: dict[str, Label] = {
    "harmful": "harmful",
    "unsafe": "harmful",
    "refusal": "harmful",
    "benign": "benign",
    "safe": "benign",
    "compliance": "benign",
}

# VLGuard instruction keys: the one on a safe image that should be answered, and the harmful ones.
_VLGUARD_KEYS = ("safe_instruction", "unsafe_instruction", "instruction")


@dataclass(frozen=True)
class Prompt:
    """One prompt to audit: its text, a unique id, an optional label and image, and metadata."""

    prompt: str
    id: str
    label: Label | None = None
    image: Path | None = None
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.label is not None and self.label not in get_args(Label):
            raise ValueError(f"label must be 'harmful', 'benign' or None, not {self.label!r}")

    @property
    def query(self) -> Query:
        """What the subject is asked: the prompt text with its image."""
        return Query(self.prompt, self.image)


def normalise_label(value: object, where: str) -> Label | None:
    """Map a label word (harmful/benign and their aliases, any case) to a ``Label``.

    ``unsafe``/``refusal`` mean harmful and ``safe``/``compliance`` mean benign, so that files
    labelled by expected model behaviour read the same as files labelled by content. Empty or
    missing means unlabelled; anything else is an error naming ``where``.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and value.strip().lower() in _LABEL_ALIASES:
        return _LABEL_ALIASES[value.strip().lower()]
    raise ProbeError(
        f"{where}: unknown label {value!r}; use harmful or benign "
        "(also accepted: unsafe, safe, refusal, compliance)"
    )


def iter_prompts(
    path: str | Path, format: str | None = None, *, allow_outside_images: bool = False
) -> Iterator[Prompt]:
    """Read a prompt file in ``format`` (guessed from the file when None) lazily, one by one.

    JSONL and the CSV formats are read a line at a time, so memory does not grow with the file
    (only the ids seen so far are kept, to refuse a duplicate); a JSON array (``.json``, VLGuard)
    is parsed whole. Image paths are resolved against the file's folder; one that leads outside
    it (``..``, an absolute path, a symlink) is refused unless ``allow_outside_images``, with the
    same message whether or not the file exists, so a prompt file cannot probe the rest of the
    disk. A file with no prompts is an error once it is read to the end.
    """
    path = Path(path)
    _check_file(path)
    fmt = guess_format(path) if format is None else format.strip().lower()
    if fmt not in _READERS:
        raise ProbeError(f"unknown prompt format {format!r}; known formats: {', '.join(FORMATS)}")
    return _checked(path, _READERS[fmt], allow_outside_images)


def _checked(path: Path, reader: Reader, allow_outside_images: bool) -> Iterator[Prompt]:
    """The reader's prompts, refusing a duplicate id and an image outside the folder.

    Only the ids are kept; a duplicate's message finds the first occurrence by reading again.
    """
    seen: set[str] = set()
    for where, prompt in reader(path):
        if prompt.id in seen:
            first = next(w for w, p in reader(path) if p.id == prompt.id)
            raise ProbeError(f"{where}: duplicate id {prompt.id!r} (first at {first})")
        seen.add(prompt.id)
        if prompt.image is not None and not allow_outside_images:
            _check_image_inside(prompt.image, path, where)
        yield prompt
    if not seen:
        raise ProbeError(f"prompt file {path} has no prompts")


def load_prompts(
    path: str | Path,
    format: str | None = None,
    *,
    max_prompts: int | None = None,
    allow_outside_images: bool = False,
) -> list[Prompt]:
    """``iter_prompts`` as a list of the first ``max_prompts`` (all when None).

    The whole file is still read (holding only the first N prompts), so ids are checked for
    uniqueness across the file and a broken file fails the same way whatever N is. Use
    ``balanced_head`` for a labelled sample.
    """
    if max_prompts is not None and max_prompts < 1:
        raise ProbeError(f"max_prompts must be at least 1, got {max_prompts}")
    prompts = iter_prompts(path, format, allow_outside_images=allow_outside_images)
    if max_prompts is None:
        return list(prompts)
    head = list(itertools.islice(prompts, max_prompts))
    for _ in prompts:  # read on: a duplicate id or a bad line later in the file still fails
        pass
    return head


def save_prompts(prompts: Sequence[Prompt], path: str | Path) -> None:
    """Write prompts as JSONL that ``load_prompts`` reads back to the same records.

    Images inside the file's folder are written relative to it (so the folder can move as a
    whole); images elsewhere are written as absolute paths. Metadata become top-level fields.
    """
    path = Path(path)
    folder = path.resolve().parent
    seen: set[str] = set()
    lines = []
    for p in prompts:
        if p.id in seen:
            raise ProbeError(f"cannot save prompts to {path}: duplicate id {p.id!r}")
        seen.add(p.id)
        clash = set(p.meta) & set(FIELDS)
        if clash:
            raise ProbeError(
                f"cannot save prompt {p.id!r}: meta key {sorted(clash)[0]!r} is a prompt field"
            )
        record: dict[str, str] = {"id": p.id, "prompt": p.prompt}
        if p.label is not None:
            record["label"] = p.label
        if p.image is not None:
            image = p.image.resolve()
            record["image"] = (
                image.relative_to(folder).as_posix() if image.is_relative_to(folder) else str(image)
            )
        record.update(p.meta)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines), encoding="utf-8")
    except OSError as exc:
        raise ProbeError(f"cannot write {path}: {exc.strerror or exc}") from None


def guess_format(path: Path) -> str:
    """Tell the format of a prompt file from its suffix and, for .json/.csv, its content.

    A .json list of VLGuard items (each with an ``instr-resp`` list) is ``vlguard``; other .json
    and .jsonl files are ``jsonl``. A .csv with a ``prompt`` column is ``csv`` (``xstest`` when it
    also has XSTest's ``type`` and ``focus`` columns); without one, AdvBench's ``goal`` column or
    FigStep's ``question``/``category_name`` columns name those sets.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".json":
        return "vlguard" if _looks_like_vlguard(path) else "jsonl"
    if suffix == ".csv":
        columns = {name.strip().lower() for name in _csv_header(path)}
        if "prompt" in columns:
            return "xstest" if {"type", "focus"} <= columns else "csv"
        if "goal" in columns:
            return "advbench"
        if {"question", "category_name"} <= columns:
            return "figstep"
        return "csv"
    raise ProbeError(
        f"cannot tell the format of {path} from its name; give one of: {', '.join(FORMATS)}"
    )


def balanced_head(prompts: Iterable[Prompt], n: int) -> list[Prompt]:
    """Take ``n`` prompts alternately harmful, benign, harmful, … keeping each label's order.

    When one label runs out the rest comes from whatever is left (the other label and the
    unlabelled prompts, in file order), so every prefix of the result is as balanced as the
    input allows. A plain head of a sorted file can be all one label, which leaves one of the
    two refusal rates undefined. One pass that keeps at most ``n`` prompts of each kind, so a
    lazily read file is sampled in memory that depends on ``n``, not on the file: a prompt past
    the first ``n`` of its kind can never be among the first ``n`` taken.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    kept: dict[Label | None, list[tuple[int, Prompt]]] = {"harmful": [], "benign": [], None: []}
    for i, prompt in enumerate(prompts):
        group = kept[prompt.label]
        if len(group) < n:
            group.append((i, prompt))
    harmful, benign = kept["harmful"], kept["benign"]
    pairs = min(len(harmful), len(benign))
    order = [item for pair in zip(harmful[:pairs], benign[:pairs], strict=True) for item in pair]
    rest = sorted(harmful[pairs:] + benign[pairs:] + kept[None], key=lambda item: item[0])
    return [prompt for _, prompt in (order + rest)[:n]]


# ---------------------------------------------------------------- readers

Reader = Callable[[Path], Iterator[tuple[str, Prompt]]]


def _check_file(path: Path) -> None:
    """Fail with a one-line message when ``path`` is not a readable file."""
    if not path.exists():
        raise ProbeError(f"prompt file not found: {path}")
    if not path.is_file():
        raise ProbeError(f"prompt file {path} is not a file")


def _parse_json(text: str, where: str) -> object:
    """``json.loads`` with the decoder's reason in a one-line ``ProbeError``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProbeError(f"{where}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ProbeError(f"{where}: JSON nested too deeply to be a prompt record") from None


_CHUNK = 1 << 16  # characters read at a time from a JSON array


def _json_array_items(path: Path, chunk: int = _CHUNK) -> Iterator[object]:
    """The items of the JSON array that is the whole of ``path``, parsed one at a time, so
    memory holds one item and one read chunk, not the file. Invalid JSON is a one-line
    ``ProbeError`` naming the item, as ``_parse_json`` words it."""
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8-sig") as handle:
        buffer, end, eof = "", 0, False

        def fill() -> bool:
            nonlocal buffer, end, eof
            more = _read_chunk(handle, path, chunk)
            eof = not more
            buffer, end = buffer[end:] + more, 0
            return bool(more)

        def skip_space() -> str:
            """The next character that is not white space ("" at the end of the file)."""
            nonlocal end
            while True:
                while end < len(buffer) and buffer[end] in " \t\r\n":
                    end += 1
                if end < len(buffer) or not fill():
                    return buffer[end] if end < len(buffer) else ""

        if skip_space() != "[":
            raise ProbeError(f"{path}: not a JSON array")
        end += 1
        count = 0
        while True:
            mark = skip_space()
            if mark == "]":
                end += 1
                break
            if count:
                if mark != ",":
                    raise ProbeError(f"{path} item {count}: not valid JSON (expecting ',' or ']')")
                end += 1
                skip_space()
            while True:
                try:
                    item, stop = decoder.raw_decode(buffer, end)
                except json.JSONDecodeError as exc:
                    if not eof and fill():
                        continue  # the item runs on past this chunk
                    raise ProbeError(
                        f"{path} item {count + 1}: not valid JSON ({exc.msg})"
                    ) from None
                except RecursionError:
                    raise ProbeError(
                        f"{path} item {count + 1}: JSON nested too deeply to be a prompt record"
                    ) from None
                if stop == len(buffer) and not eof and fill():
                    continue  # a number may go on in the next chunk: parse it again whole
                break
            end = stop
            count += 1
            yield item
        if skip_space():
            raise ProbeError(f"{path}: not valid JSON (extra data after the array)")


def _read_chunk(handle, path: Path, size: int) -> str:
    """Up to ``size`` characters; a decoding or read error is a one-line ``ProbeError``."""
    try:
        return handle.read(size)
    except UnicodeDecodeError as exc:
        raise ProbeError(f"{path} is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None


def _resolve_image(value: str, folder: Path) -> Path:
    """An image path from a prompt file, made absolute against the file's folder."""
    image = Path(value).expanduser()
    return (image if image.is_absolute() else folder / image).resolve()


def _check_image_inside(image: Path, prompt_file: Path, where: str) -> None:
    folder = prompt_file.resolve().parent
    if not image.is_relative_to(folder):
        raise ProbeError(
            f"{where}: image path leads outside the prompt file's folder {folder}; "
            "pass --allow-outside-images to read images from elsewhere"
        )


def _stringify(value: object) -> str:
    """A metadata value as text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _record_prompt(record: dict[str, object], where: str, folder: Path, default_id: str) -> Prompt:
    """Build a ``Prompt`` from one JSONL/CSV record; missing values are ``None``."""
    text = record.get("prompt")
    if text is None:
        raise ProbeError(f"{where}: record has no 'prompt' field")
    if not isinstance(text, str):
        raise ProbeError(f"{where}: 'prompt' must be text, not {type(text).__name__}")
    if not text.strip():
        raise ProbeError(f"{where}: record has an empty 'prompt'")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProbeError(
            f"{where}: 'prompt' is not valid Unicode text (a lone surrogate at character "
            f"{exc.start})"
        ) from None
    raw_id = record.get("id")
    prompt_id = default_id if raw_id is None or raw_id == "" else _stringify(raw_id)
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        raise ProbeError(f"{where}: 'image' must be a path, not {type(image).__name__}")
    return Prompt(
        prompt=text,
        id=prompt_id,
        label=normalise_label(record.get("label"), where),
        image=_resolve_image(image, folder) if image else None,
        meta={k: _stringify(v) for k, v in record.items() if k not in FIELDS and v is not None},
    )


def _read_jsonl(path: Path) -> Iterator[tuple[str, Prompt]]:
    """JSON Lines, one object per line, blank lines skipped; a .json array of objects also works.

    Lines are read one at a time (split at newline bytes only, as JSON Lines defines them); an
    array's items are read one at a time too (``_json_array_items``).
    """
    folder = path.resolve().parent
    records: Iterable[tuple[str, object]]
    if _first_character(path) == "[":
        records = ((f"{path} item {i}", item) for i, item in enumerate(_json_array_items(path), 1))
    else:
        records = (
            (f"{path} line {n}", _parse_json(line, f"{path} line {n}"))
            for n, line in _text_lines(path)
            if line.strip()
        )
    for i, (where, record) in enumerate(records, 1):
        if not isinstance(record, dict):
            raise ProbeError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield where, _record_prompt(record, where, folder, f"{path.stem}-{i}")


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The file's lines (numbered from 1, split at newline bytes only), decoded one at a time; a
    leading BOM is dropped and a decoding error names the byte, as ``_read_text`` does."""
    offset = 0
    try:
        with path.open("rb") as handle:
            for n, raw in enumerate(handle, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ProbeError(
                        f"{path} is not UTF-8 text ({exc.reason} at byte {offset + exc.start})"
                    ) from None
                offset += len(raw)
                yield n, line.removeprefix("\ufeff") if n == 1 else line
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None


def _first_character(path: Path) -> str:
    """The first character that is not white space (or a BOM), read from the file's start."""
    for _, line in _text_lines(path):
        if line.strip():
            return line.strip()[0]
    return ""


def _csv_header(path: Path) -> list[str]:
    """The first row of a CSV file (empty for an empty file)."""
    return next(_csv_rows_raw(path), (0, []))[1]


def _csv_rows_raw(path: Path) -> Iterator[tuple[int, list[str]]]:
    """CSV rows with the line each starts on; decoding and parsing errors become ``ProbeError``."""
    line = 1
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            for row in reader:
                yield line, row
                line = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise ProbeError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise ProbeError(f"{path} line {line}: not valid CSV ({exc})") from None
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None


def _csv_records(path: Path, required: str, hint: str = "") -> Iterator[tuple[str, dict[str, str]]]:
    """CSV rows as {column: value} keyed by the stripped header, empty cells left out.

    Column names matching a prompt field match in any case (``Prompt`` is ``prompt``). Rows with
    no values are skipped like blank lines; a row with more cells than the header is an error.
    """
    rows = _csv_rows_raw(path)
    _, header = next(rows, (1, []))
    if not header:  # an empty file: load_prompts reports it has no prompts
        return
    names = [
        name.strip().lower() if name.strip().lower() in FIELDS else name.strip() for name in header
    ]
    if required not in names:
        columns = ", ".join(name for name in names if name) or "none"
        raise ProbeError(f"{path} has no {required!r} column (columns: {columns}){hint}")
    for line, row in rows:
        where = f"{path} line {line}"
        if len(row) > len(names):
            raise ProbeError(f"{where}: {len(row)} cells but the header has {len(names)} columns")
        record = {name: value for name, value in zip(names, row, strict=False) if name and value}
        if record:
            yield where, record


def _read_csv(path: Path) -> Iterator[tuple[str, Prompt]]:
    """A CSV prompt file: ``prompt``, optional ``id``/``label``/``image``; other columns → meta."""
    hint = "; for a public set give its format (advbench, figstep, xstest)"
    folder = path.resolve().parent
    for i, (where, record) in enumerate(_csv_records(path, "prompt", hint), 1):
        yield where, _record_prompt(dict(record), where, folder, f"{path.stem}-{i}")


def _read_vlguard(path: Path) -> Iterator[tuple[str, Prompt]]:
    """VLGuard train/test JSON: one prompt per instruction of every item.

    On a safe image (``safe: true``) the ``safe_instruction`` is benign and the
    ``unsafe_instruction`` harmful; an unsafe image's ``instruction`` is harmful. Ids are the
    item id plus ``-safe``/``-unsafe`` (``~2``, ``~3`` … on repeats: train.json repeats an item
    id, and the Safety Mirage rewrite sets hold three rewrites per item). Images are resolved
    against the JSON file's folder but not required to exist (they ship separately).
    """
    if _first_character(path) != "[":  # not an array: parse it whole to say what it is
        items = _parse_json(_read_text(path), str(path))
        raise ProbeError(f"{path}: expected a list of VLGuard items, got {type(items).__name__}")
    items = _json_array_items(path)
    folder = path.resolve().parent
    counts: dict[str, int] = {}
    for i, item in enumerate(items, 1):
        where = f"{path} item {i}"
        if not isinstance(item, dict) or not isinstance(item.get("instr-resp"), list):
            raise ProbeError(f"{where}: not a VLGuard item (no 'instr-resp' list)")
        item_id = _stringify(item.get("id", f"{path.stem}-{i}"))
        image = item.get("image")
        base_meta = {"source": "vlguard", "item_id": item_id}
        if isinstance(item.get("safe"), bool):
            base_meta["safe_image"] = "true" if item["safe"] else "false"
        for key in ("harmful_category", "harmful_subcategory"):
            if item.get(key):
                base_meta[key] = _stringify(item[key])
        for j, entry in enumerate(item["instr-resp"], 1):
            keys = [k for k in _VLGUARD_KEYS if isinstance(entry, dict) and k in entry]
            field_name = keys[0] if keys else None
            text = entry.get(field_name) if field_name else None
            if field_name is None or not isinstance(text, str) or not text.strip():
                raise ProbeError(f"{where}: instr-resp entry {j} has no instruction text")
            label: Label = (
                "benign"
                if field_name == "safe_instruction" and item.get("safe") is not False
                else "harmful"
            )
            prompt_id = f"{item_id}-{'safe' if label == 'benign' else 'unsafe'}"
            counts[prompt_id] = counts.get(prompt_id, 0) + 1
            if counts[prompt_id] > 1:
                prompt_id += f"~{counts[prompt_id]}"
            meta = {**base_meta, "field": field_name}
            if isinstance(entry.get("response"), str):
                meta["response"] = entry["response"]
            yield (
                where,
                Prompt(
                    prompt=text,
                    id=prompt_id,
                    label=label,
                    image=_resolve_image(image, folder)
                    if isinstance(image, str) and image
                    else None,
                    meta=meta,
                ),
            )


def _read_xstest(path: Path) -> Iterator[tuple[str, Prompt]]:
    """XSTest v2 (xstest_prompts.csv): safe/unsafe labels; ``type``, ``focus``, ``note`` → meta."""
    for i, (where, row) in enumerate(_csv_records(path, "prompt"), 1):
        yield (
            where,
            Prompt(
                prompt=row["prompt"],
                id=f"xstest-{row.get('id', i)}",
                label=normalise_label(row.get("label"), where),
                meta={"source": "xstest"}
                | {k: row[k] for k in ("type", "focus", "note") if k in row},
            ),
        )


def _read_advbench(path: Path) -> Iterator[tuple[str, Prompt]]:
    """AdvBench harmful_behaviors.csv: every ``goal`` is harmful; the ``target`` goes to meta."""
    for i, (where, row) in enumerate(_csv_records(path, "goal"), 1):
        meta = {"source": "advbench"} | ({"target": row["target"]} if "target" in row else {})
        yield where, Prompt(prompt=row["goal"], id=f"advbench-{i}", label="harmful", meta=meta)


def _read_figstep(path: Path) -> Iterator[tuple[str, Prompt]]:
    """FigStep SafeBench CSV: every ``question`` is harmful; category and the image text → meta.

    The ``instruction`` column is the text FigStep renders into its typographic image.
    """
    keep = {
        "category_name": "category",
        "category_id": "category_id",
        "task_id": "task_id",
        "instruction": "instruction",
    }
    for i, (where, row) in enumerate(_csv_records(path, "question"), 1):
        meta = {"source": "figstep"} | {new: row[old] for old, new in keep.items() if old in row}
        yield where, Prompt(prompt=row["question"], id=f"figstep-{i}", label="harmful", meta=meta)


def _looks_like_vlguard(path: Path) -> bool:
    """Whether a .json file is a non-empty list of items that each carry an ``instr-resp`` list."""
    if _first_character(path) != "[":
        return False
    seen = False
    try:
        for item in _json_array_items(path):
            if not (isinstance(item, dict) and "instr-resp" in item):
                return False
            seen = True
    except ProbeError:
        return False
    return seen


_READERS: dict[str, Reader] = {
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "vlguard": _read_vlguard,
    "xstest": _read_xstest,
    "advbench": _read_advbench,
    "figstep": _read_figstep,
}
