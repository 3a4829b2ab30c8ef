"""Read a run directory back as typed records (``load_run``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from probe.errors import ProbeError
from probe.lexicon.table import TriggerLexicon
from probe.report.records import AttributionRecord, EditRecord, ResponseRecord, RunSummary
from probe.rundir import read_jsonl, run_status

T = TypeVar("T")


@dataclass
class RunData:
    """Everything a report is made from, read from one run directory.

    ``problems`` lists what was wrong with the files (wrong field types, unusable lines); the
    report shows it rather than failing.
    """

    run_dir: Path
    summary: RunSummary
    lexicon: TriggerLexicon | None = None
    data_cues: TriggerLexicon | None = None
    attributions: list[AttributionRecord] = field(default_factory=list)
    responses: dict[str, ResponseRecord] = field(default_factory=dict)
    attacks: list[EditRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def flips(self) -> list[EditRecord]:
        """The verified edits that flipped the model's judged response."""
        return [a for a in self.attacks if a.flipped]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ProbeError(f"{path} is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None


def _records(path: Path, parse: Callable[[Any], T | None], problems: list[str]) -> list[T]:
    """The usable records of one JSONL file; lines that are not records are counted in
    ``problems``. Unreadable files (binary, invalid JSON) are a ProbeError naming the file."""
    try:
        raw = read_jsonl(path)
    except UnicodeDecodeError as exc:
        raise ProbeError(f"{path} is not UTF-8 text ({exc.reason})") from None
    except RecursionError:
        raise ProbeError(f"{path}: a line is nested too deeply to read") from None
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None
    parsed = [parse(r) for r in raw]
    records = [r for r in parsed if r is not None]
    if len(records) < len(raw):
        skipped = len(raw) - len(records)
        problems.append(f"{path.name}: {skipped} line{'s' * (skipped != 1)} not usable; skipped")
    return records


def _lexicon(path: Path) -> TriggerLexicon | None:
    if not path.is_file():
        return None
    return TriggerLexicon.from_json(path)


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory's files (only summary.json is required)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise ProbeError(f"{run_dir} is not a probe run directory (no summary.json)")
    try:
        raw = json.loads(_read_text(summary_path))
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise ProbeError(f"{summary_path}: not valid JSON ({reason})") from None
    if not isinstance(raw, dict):
        raise ProbeError(f"{summary_path}: expected a JSON object")
    if raw.get("status") == "running":
        raw["status"] = run_status(run_dir, raw)  # "running" with a free lock: killed
    summary = RunSummary.from_record(raw)
    problems = list(summary.problems)
    responses: dict[str, ResponseRecord] = {}
    for record in _records(run_dir / "responses.jsonl", ResponseRecord.from_record, problems):
        responses.setdefault(record.id, record)
    return RunData(
        run_dir=run_dir,
        summary=summary,
        lexicon=_lexicon(run_dir / "lexicon.json"),
        data_cues=_lexicon(run_dir / "data_cues.json"),
        attributions=_records(
            run_dir / "attributions.jsonl", AttributionRecord.from_record, problems
        ),
        responses=responses,
        attacks=_records(run_dir / "attacks.jsonl", EditRecord.from_record, problems),
        problems=problems,
    )
