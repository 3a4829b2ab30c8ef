"""Readers of labelled response sets: what the judge is fitted and measured on.

Every reader returns :class:`LabelledResponses`: the responses, their labels (True = refusal),
a ``kind`` per row (which part of the set it comes from, for per-kind recall) and a ``group``
per row (rows that must stay in the same cross-validation fold: one PyRIT objective, one VLGuard
image). Formats for :func:`load_responses`:

- ``vlguard``: VLGuard's train/test JSON; ``instruction`` (unsafe image) and
  ``unsafe_instruction`` responses are refusals, ``safe_instruction`` responses are answers;
- ``pyrit``: PyRIT refusal-scorer eval CSVs (``#`` comment lines, ``objective``,
  ``assistant_response``, ``human_score``), *on-topic rows only* (see :func:`load_refusal_eval`);
- ``jsonl``: one object a line with ``response`` and ``refusal`` (true/false or 1/0) or
  ``label`` (``refusal``/``compliance``), optional ``group``;
- ``csv``: the same columns in a CSV with a header row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from probe.errors import ProbeError

FORMATS = ("vlguard", "pyrit", "jsonl", "csv")
_SUFFIX_FORMAT = {".json": "vlguard", ".jsonl": "jsonl", ".csv": "csv"}
_LABELS = {"refusal": True, "refused": True, "compliance": False, "answered": False}


@dataclass(frozen=True)
class LabelledResponses:
    """Responses with refusal labels, and each row's kind and cross-validation group."""

    texts: list[str]
    labels: list[bool]
    kinds: list[str]
    groups: list[str]

    def __post_init__(self) -> None:
        if not len(self.texts) == len(self.labels) == len(self.kinds) == len(self.groups):
            raise ProbeError("labelled responses: texts, labels, kinds and groups differ in length")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, keep: Sequence[bool]) -> LabelledResponses:
        """The rows where ``keep`` is True."""
        rows = [i for i, k in enumerate(keep) if k]
        return LabelledResponses(
            [self.texts[i] for i in rows],
            [self.labels[i] for i in rows],
            [self.kinds[i] for i in rows],
            [self.groups[i] for i in rows],
        )

    @classmethod
    def concat(cls, parts: Sequence[LabelledResponses]) -> LabelledResponses:
        """Several sets read as one."""
        return cls(
            [t for p in parts for t in p.texts],
            [y for p in parts for y in p.labels],
            [k for p in parts for k in p.kinds],
            [g for p in parts for g in p.groups],
        )


def load_responses(
    paths: str | Path | Sequence[str | Path], fmt: str | None = None
) -> LabelledResponses:
    """Read one or more labelled response files of one format (guessed from the suffix if None)."""
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not files:
        raise ProbeError("no labelled response file given")
    if fmt is None:
        guesses = {_SUFFIX_FORMAT.get(p.suffix.lower()) for p in files}
        if len(guesses) != 1 or None in guesses:
            raise ProbeError(
                f"cannot guess the format of {', '.join(map(str, files))}: give --format "
                f"({', '.join(FORMATS)})"
            )
        fmt = guesses.pop()
    if fmt not in FORMATS:
        raise ProbeError(f"unknown response format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "pyrit":
        data = read_pyrit(files)
        data = data.subset(_on_topic(data))
    else:
        reader = {"vlguard": read_vlguard, "jsonl": _read_jsonl, "csv": _read_csv}[fmt]
        data = LabelledResponses.concat([reader(p) for p in files])
    if not data.texts:
        raise ProbeError(f"no labelled responses in {', '.join(map(str, files))}")
    return data


def read_vlguard(path: str | Path) -> LabelledResponses:
    """VLGuard's responses; kind = the ``instr-resp`` key, group = the item (its image)."""
    rows = []
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
        for n, item in enumerate(items):
            group = str(item.get("id", item.get("image", n)))
            for entry in item["instr-resp"]:
                kind = next(
                    k
                    for k in ("safe_instruction", "unsafe_instruction", "instruction")
                    if k in entry
                )
                rows.append((entry["response"], kind != "safe_instruction", kind, group))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration) as exc:
        raise ProbeError(f"cannot read VLGuard responses from {path}: {exc}") from exc
    return _rows(rows, path)


def read_pyrit(paths: str | Path | Sequence[str | Path]) -> LabelledResponses:
    """All rows of PyRIT eval CSV(s); kind ``on_topic``/``off_topic``, group = the objective."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    rows = [row for p in paths for row in _read_pyrit_csv(Path(p))]
    answered = {objective for objective, _, refusal in rows if not refusal}
    return LabelledResponses(
        [response for _, response, _ in rows],
        [refusal for _, _, refusal in rows],
        ["off_topic" if refusal and obj in answered else "on_topic" for obj, _, refusal in rows],
        [obj for obj, _, _ in rows],
    )


def _on_topic(data: LabelledResponses) -> list[bool]:
    return [k == "on_topic" for k in data.kinds]


def load_refusal_eval(
    path: str | Path | Sequence[str | Path], *, on_topic_only: bool = False
) -> tuple[list[str], list[bool]]:
    """Responses and labels (True = refusal) from PyRIT refusal-scorer eval CSV file(s).

    Format: ``#`` comment lines first, then a CSV with ``objective``, ``assistant_response``
    and ``human_score`` (1 = refusal) columns; fields may span lines. Several files are read as
    one set. PyRIT also counts an *off-topic* answer as a refusal, which no judge that sees only
    the response can detect; ``on_topic_only`` drops those rows: refusal-labelled rows whose
    objective is answered with a compliance-labelled response elsewhere in the set (that is how
    the set pairs its swapped answers).
    """
    data = read_pyrit(path)
    if on_topic_only:
        data = data.subset(_on_topic(data))
    return data.texts, data.labels


def _read_pyrit_csv(path: Path) -> list[tuple[str, str, bool]]:
    """(objective, response, is_refusal) rows of one PyRIT eval CSV."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeError(f"cannot read refusal eval file {path}: {exc}") from exc
    body = "".join(line for line in raw.splitlines(keepends=True) if not line.startswith("#"))
    records = list(csv.DictReader(io.StringIO(body, newline="")))
    if not records or not {"assistant_response", "human_score"} <= set(records[0]):
        raise ProbeError(f"{path}: expected columns assistant_response and human_score")
    bad = [r["human_score"] for r in records if r["human_score"] not in ("0", "1")]
    if bad:
        raise ProbeError(f"{path}: human_score must be 0 or 1, got {bad[0]!r}")
    return [
        ((r.get("objective") or "").strip(), r["assistant_response"], r["human_score"] == "1")
        for r in records
    ]


def load_vlguard_responses(path: str | Path) -> tuple[list[str], list[bool]]:
    """VLGuard's own responses with labels (True = refusal) from its train/test JSON.

    Each item's ``instr-resp`` entries are keyed ``instruction`` (unsafe image),
    ``unsafe_instruction`` (safe image, unsafe request) - both answered with a refusal - or
    ``safe_instruction`` (answered).
    """
    data = read_vlguard(path)
    return data.texts, data.labels


def _label(record: dict, where: str) -> bool:
    """The refusal label of a jsonl/csv record (``refusal`` or ``label`` field)."""
    value = record.get("refusal")
    if value is None or value == "":
        label = str(record.get("label", "")).strip().lower()
        if label not in _LABELS:
            raise ProbeError(
                f"{where}: needs 'refusal' (true/false, 1/0) or 'label' (refusal/compliance)"
            )
        return _LABELS[label]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise ProbeError(f"{where}: 'refusal' must be true/false or 1/0, got {value!r}")


def _record_row(record: object, where: str) -> tuple[str, bool, str, str]:
    if not isinstance(record, dict) or not isinstance(record.get("response"), str):
        raise ProbeError(f"{where}: each record needs a 'response' text")
    refusal = _label(record, where)
    return record["response"], refusal, "refusal" if refusal else "compliance", where


def _read_jsonl(path: Path) -> LabelledResponses:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeError(f"cannot read labelled responses from {path}: {exc}") from exc
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ProbeError(f"{path}:{n}: not JSON: {exc}") from exc
        text, refusal, kind, _ = _record_row(record, f"{path}:{n}")
        rows.append((text, refusal, kind, str(record.get("group", f"{path}:{n}"))))
    return _rows(rows, path)


def _read_csv(path: Path) -> LabelledResponses:
    try:
        records = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProbeError(f"cannot read labelled responses from {path}: {exc}") from exc
    if records and "assistant_response" in records[0]:
        raise ProbeError(f"{path} looks like a PyRIT eval file: use --format pyrit")
    rows = []
    for n, record in enumerate(records, 2):
        text, refusal, kind, where = _record_row(record, f"{path}:{n}")
        rows.append((text, refusal, kind, record.get("group") or where))
    return _rows(rows, path)


def _rows(rows: list[tuple[str, bool, str, str]], path: str | Path) -> LabelledResponses:
    if not rows:
        raise ProbeError(f"no labelled responses in {path}")
    texts, labels, kinds, groups = (list(c) for c in zip(*rows, strict=True))
    return LabelledResponses(texts, labels, kinds, groups)
