"""Reading run directories for a comparison, and pairing them on their shared prompts.

Only the run-directory contract is relied on (summary.json, lexicon.json, attributions.jsonl,
attacks.jsonl, responses.jsonl); any of them may be missing, and unknown fields are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from probe.attribution.base import WordAttribution
from probe.errors import ProbeError
from probe.lexicon.table import TriggerLexicon
from probe.rundir import read_jsonl

RUN_FILES = ("summary.json", "lexicon.json", "attributions.jsonl", "responses.jsonl")


@dataclass
class RunData:
    """One run directory, read back: what a comparison needs of it."""

    path: Path
    name: str
    summary: dict
    lexicon: TriggerLexicon | None
    attributions: dict[str, WordAttribution]
    responses: dict[str, dict]
    attacks: list[dict] | None
    data_cues: TriggerLexicon | None = None
    notes: list[str] = field(default_factory=list)

    def prompt(self, prompt_id: str) -> str | None:
        """The prompt text of ``prompt_id`` (from responses, else attributions)."""
        if prompt_id in self.responses:
            return self.responses[prompt_id].get("prompt")
        record = self.attributions.get(prompt_id)
        return record.prompt if record is not None else None

    def label(self, prompt_id: str) -> str | None:
        record = self.responses.get(prompt_id) or {}
        if record.get("label") is not None:
            return record["label"]
        attribution = self.attributions.get(prompt_id)
        return attribution.label if attribution is not None else None

    def refused(self, prompt_id: str) -> bool | None:
        """The judged verdict on the unedited prompt (responses.jsonl), if the run has it."""
        value = (self.responses.get(prompt_id) or {}).get("judged_refusal")
        return None if value is None else bool(value)

    def ids(self) -> list[str]:
        """Prompt ids in the run's own order (responses first, then attribution-only ids)."""
        seen = dict.fromkeys(self.responses)
        seen.update(dict.fromkeys(self.attributions))
        return list(seen)

    @property
    def model(self) -> str | None:
        return self.summary.get("model")


def load_run(path: str | Path, name: str | None = None) -> RunData:
    """Read a run directory; a folder with none of the run files is refused."""
    folder = Path(path)
    if not folder.is_dir():
        raise ProbeError(f"run directory not found: {folder}")
    if not any((folder / f).is_file() for f in RUN_FILES):
        raise ProbeError(f"{folder} is not a probe run directory (none of {', '.join(RUN_FILES)})")
    summary = _read_json(folder / "summary.json")
    lexicon = (
        TriggerLexicon.from_json(folder / "lexicon.json")
        if (folder / "lexicon.json").is_file()
        else None
    )
    cues = (
        TriggerLexicon.from_json(folder / "data_cues.json")
        if (folder / "data_cues.json").is_file()
        else None
    )
    attributions = {}
    for record in read_jsonl(folder / "attributions.jsonl"):
        attribution = WordAttribution.from_record(record)
        attributions[attribution.id] = attribution
    responses = {}
    for number, record in enumerate(read_jsonl(folder / "responses.jsonl"), 1):
        if "id" not in record:
            raise ProbeError(f"{folder / 'responses.jsonl'} line {number}: no 'id'")
        responses[str(record["id"])] = record
    attacks_path = folder / "attacks.jsonl"
    attacks = read_jsonl(attacks_path) if attacks_path.is_file() else None
    return RunData(
        path=folder,
        name=name or folder.name,
        summary=summary,
        lexicon=lexicon,
        attributions=attributions,
        responses=responses,
        attacks=attacks,
        data_cues=cues,
    )


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProbeError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ProbeError(f"{path}: expected a JSON object")
    return value


def unique_names(runs: list[RunData]) -> None:
    """Make run names distinct (a folder name repeated gets its position appended)."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    for i, run in enumerate(runs, 1):
        if counts[run.name] > 1:
            run.name = f"{run.name}#{i}"


def shared_prompts(a: RunData, b: RunData) -> tuple[list[str], int]:
    """Ids of the prompts both runs hold with the same text (in A's order), and how many ids
    the two share with *different* texts (left out: not the same prompt)."""
    shared, mismatched = [], 0
    b_ids = set(b.ids())
    for prompt_id in a.ids():
        if prompt_id not in b_ids:
            continue
        if a.prompt(prompt_id) == b.prompt(prompt_id):
            shared.append(prompt_id)
        else:
            mismatched += 1
    return shared, mismatched
