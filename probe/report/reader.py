"""Read a run directory back as typed records (``load_run``): the one reader of run directories
that the report and ``probe compare`` share."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from probe.errors import ProbeError, read_text
from probe.lexicon.table import TriggerLexicon
from probe.report.records import AttributionView, EditRecord, ResponseRecord, RunSummary
from probe.rundir import read_jsonl, run_status

T = TypeVar("T")


@dataclass
class RunData:
    """Everything a report or comparison is made from, read from one run directory.

    ``problems`` lists what was wrong with the files (wrong field types, unusable lines); the
    report shows it rather than failing. ``responses`` keeps the first line of each id.
    """

    run_dir: Path
    summary: RunSummary
    lexicon: TriggerLexicon | None = None
    data_cues: TriggerLexicon | None = None
    attributions: list[AttributionView] = field(default_factory=list)
    responses: dict[str, ResponseRecord] = field(default_factory=dict)
    attacks: list[EditRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def flips(self) -> list[EditRecord]:
        """The verified edits that flipped the model's judged response."""
        return [a for a in self.attacks if a.flipped]


def _records(path: Path, parse: Callable[[Any], T | None], problems: list[str]) -> list[T]:
    """The usable records of one JSONL file; lines that are not records are counted in
    ``problems``. Unreadable files (binary, invalid JSON) are a ProbeError naming the file."""
    raw = read_jsonl(path)
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


def _summary(path: Path) -> RunSummary:
    try:
        raw = json.loads(read_text(path))
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise ProbeError(f"{path}: not valid JSON ({reason})") from None
    if not isinstance(raw, dict):
        raise ProbeError(f"{path}: expected a JSON object")
    if raw.get("status") == "running":
        raw["status"] = run_status(path.parent, raw)  # "running" with a free lock: killed
    return RunSummary.from_record(raw, source=str(path))


def load_run(run_dir: str | Path, *, require_summary: bool = True) -> RunData:
    """Read a run directory's files. Only summary.json is required, and only when
    ``require_summary`` (a comparison also takes a folder of record files alone)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = _summary(summary_path)
    elif require_summary:
        raise ProbeError(f"{run_dir} is not a probe run directory (no summary.json)")
    else:
        summary = RunSummary.from_record({})
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
            run_dir / "attributions.jsonl", AttributionView.from_record, problems
        ),
        responses=responses,
        attacks=_records(run_dir / "attacks.jsonl", EditRecord.from_record, problems),
        problems=problems,
    )
