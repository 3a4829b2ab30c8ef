"""The run directory on disk: the files each stage writes and how they are read back.

Every stage writes its results here as soon as they exist, so an interrupted run keeps what it
already wrote. The report stage only reads (``probe.report``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from probe.errors import ProbeError
from probe.lexicon_table import TriggerLexicon


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ProbeError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
    return records


def write_summary(run_dir: Path, summary: dict) -> None:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


def write_lexicon(run_dir: Path, lexicon: TriggerLexicon) -> None:
    lexicon.to_json(run_dir / "lexicon.json")
    lexicon.to_csv(run_dir / "lexicon.csv")
