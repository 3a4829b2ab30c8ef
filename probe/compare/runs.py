"""Run directories in a comparison, and pairing them on their shared prompts.

The files are read by the report's reader (``probe.report.reader.load_run``), so a comparison
sees the same typed, tolerant records as a report; any record file may be missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from probe.errors import ProbeError
from probe.lexicon.table import TriggerLexicon
from probe.report.reader import RunData
from probe.report.reader import load_run as read_run
from probe.report.records import AttributionView, EditRecord, ResponseRecord, RunSummary

RUN_FILES = ("summary.json", "lexicon.json", "attributions.jsonl", "responses.jsonl")


@dataclass
class ComparedRun:
    """One run directory in a comparison: its records (``data``), the name it is shown under,
    its attributions by prompt id, and its edits (None when it has no attacks.jsonl)."""

    data: RunData
    name: str
    attributions: dict[str, AttributionView]
    attacks: list[EditRecord] | None

    @property
    def path(self) -> Path:
        return self.data.run_dir

    @property
    def summary(self) -> RunSummary:
        return self.data.summary

    @property
    def lexicon(self) -> TriggerLexicon | None:
        return self.data.lexicon

    @property
    def data_cues(self) -> TriggerLexicon | None:
        return self.data.data_cues

    @property
    def responses(self) -> dict[str, ResponseRecord]:
        return self.data.responses

    @property
    def model(self) -> str | None:
        return self.summary.model

    def prompt(self, prompt_id: str) -> str | None:
        """The prompt text of ``prompt_id`` (from responses, else attributions)."""
        if prompt_id in self.responses:
            return self.responses[prompt_id].prompt
        record = self.attributions.get(prompt_id)
        return record.prompt if record is not None else None

    def label(self, prompt_id: str) -> str | None:
        response = self.responses.get(prompt_id)
        if response is not None and response.label is not None:
            return response.label
        attribution = self.attributions.get(prompt_id)
        return attribution.label if attribution is not None else None

    def refused(self, prompt_id: str) -> bool | None:
        """The judged verdict on the unedited prompt (responses.jsonl), if the run has it."""
        response = self.responses.get(prompt_id)
        return response.judged_refusal if response is not None else None

    def ids(self) -> list[str]:
        """Prompt ids in the run's own order (responses first, then attribution-only ids)."""
        seen = dict.fromkeys(self.responses)
        seen.update(dict.fromkeys(self.attributions))
        return list(seen)


def load_run(path: str | Path, name: str | None = None) -> ComparedRun:
    """Read a run directory; a folder with none of the run files is refused."""
    folder = Path(path)
    if not folder.is_dir():
        raise ProbeError(f"run directory not found: {folder}")
    if not any((folder / f).is_file() for f in RUN_FILES):
        raise ProbeError(f"{folder} is not a probe run directory (none of {', '.join(RUN_FILES)})")
    data = read_run(folder, require_summary=False)
    return ComparedRun(
        data=data,
        name=name or folder.name,
        attributions={record.id: record for record in data.attributions},
        attacks=data.attacks if (folder / "attacks.jsonl").is_file() else None,
    )


def unique_names(runs: list[ComparedRun]) -> None:
    """Make run names distinct (a folder name repeated gets its position appended)."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    for i, run in enumerate(runs, 1):
        if counts[run.name] > 1:
            run.name = f"{run.name}#{i}"


def shared_prompts(a: ComparedRun, b: ComparedRun) -> tuple[list[str], int]:
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
