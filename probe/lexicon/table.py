"""The trigger-lexicon table shared by every lexicon source (model attributions, data cues).

A ``TriggerLexicon`` is what ``lexicon.json`` / ``lexicon.csv`` hold (the run-directory contract
in the README's "Contracts"): entries ranked best-first within each direction.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from probe.errors import ProbeError, read_text

Direction = Literal["refusal", "compliance"]
DIRECTIONS: tuple[Direction, Direction] = ("refusal", "compliance")


@dataclass
class LexiconEntry:
    """One trigger word and the evidence for it.

    ``effect`` is signed like attributions: positive pushes toward refusal. ``support`` is the
    number of prompts (or data records) containing the word. ``role`` (model lexicons; None in
    data cues, and then not written) says what kind of word it is: ``"trigger"`` (a shortcut
    candidate), ``"weak"`` (a trigger candidate under the practical-significance floor) or
    ``"content"`` (what requests are about). ``extra`` carries source-specific columns (e.g.
    ``lead_share``, ``z_first_word``) that are written as additional fields.
    """

    word: str
    direction: Direction
    effect: float
    ci_low: float
    ci_high: float
    support: int
    p_value: float
    q_value: float
    consistency: float | None = None
    flip_rate: float | None = None
    flip_ci_low: float | None = None
    flip_ci_high: float | None = None
    role: str | None = None
    extra: dict[str, float | int | str | None] = field(default_factory=dict)

    def to_record(self) -> dict:
        """The entry as one lexicon.json entry / lexicon.csv row (``role`` only when set)."""
        record = asdict(self)
        extra = record.pop("extra")
        if record["role"] is None:
            del record["role"]
        record.update(extra)
        return {k: _json_safe(v) for k, v in record.items()}

    @classmethod
    def from_record(cls, record: object, where: str) -> LexiconEntry:
        """An entry from its lexicon.json object (null numbers read as NaN); anything wrong is
        a one-line ``ProbeError`` starting with ``where``."""
        if not isinstance(record, dict) or "word" not in record or "direction" not in record:
            raise ProbeError(f"{where}: needs 'word' and 'direction'")
        if record["direction"] not in DIRECTIONS:
            raise ProbeError(f"{where}: direction must be refusal or compliance")
        known = {f.name for f in fields(cls)} - {"extra"}
        base: dict[str, Any] = {k: record.get(k) for k in known}
        try:
            for name in ("effect", "ci_low", "ci_high", "p_value", "q_value"):
                base[name] = math.nan if base[name] is None else float(base[name])
            base["support"] = int(base["support"] or 0)
        except (TypeError, ValueError) as exc:
            raise ProbeError(f"{where}: {exc}") from None
        if base["role"] is not None and not isinstance(base["role"], str):
            raise ProbeError(f"{where}: role must be a string")
        return cls(**base, extra={k: v for k, v in record.items() if k not in known})


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class TriggerLexicon:
    """Ranked trigger words. ``source`` is "model" (attributions) or "data" (cue mining)."""

    entries: list[LexiconEntry]
    source: str = "model"
    meta: dict = field(default_factory=dict)

    def ranked(self, direction: Direction) -> list[LexiconEntry]:
        """Entries of one direction, in ranking order (the stored order)."""
        return [e for e in self.entries if e.direction == direction]

    def top(self, direction: Direction, k: int | None = None) -> list[str]:
        words = [e.word for e in self.ranked(direction)]
        return words if k is None else words[:k]

    def get(self, word: str) -> LexiconEntry | None:
        return next((e for e in self.entries if e.word == word), None)

    def to_json(self, path: str | Path) -> None:
        payload = {
            "source": self.source,
            "meta": self.meta,
            "entries": [e.to_record() for e in self.entries],
        }
        Path(path).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")

    def to_csv(self, path: str | Path) -> None:
        records = [e.to_record() for e in self.entries]
        columns: list[str] = []
        for record in records:
            columns += [c for c in record if c not in columns]
        if not columns:  # the columns every entry has
            columns = [f.name for f in fields(LexiconEntry) if f.name not in ("role", "extra")]
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)

    @classmethod
    def from_json(cls, path: str | Path) -> TriggerLexicon:
        """Read lexicon.json (or data_cues.json); anything wrong is a one-line ``ProbeError``."""
        path = Path(path)
        if not path.exists():
            raise ProbeError(f"lexicon file not found: {path}")
        try:
            payload = json.loads(read_text(path))
            raw_entries = payload["entries"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ProbeError(f"{path} is not a probe lexicon ({exc})") from None
        except RecursionError:
            raise ProbeError(f"{path} is not a probe lexicon (nested too deeply)") from None
        if not isinstance(raw_entries, list):
            raise ProbeError(f"{path} is not a probe lexicon ('entries' must be a list)")
        entries = [
            LexiconEntry.from_record(raw, f"{path} entry {i}")
            for i, raw in enumerate(raw_entries, 1)
        ]
        return cls(
            entries=entries, source=payload.get("source", "model"), meta=payload.get("meta", {})
        )


def compare_lexicons(
    model: TriggerLexicon, data: TriggerLexicon, k: int = 10, normalise=str.lower
) -> dict:
    """Did the model learn its data's shortcuts? Model triggers vs data cues, per direction.

    ``overlap_at_k``: share of the model's top-k trigger words that are also among the data's
    top-k cues of the same direction. ``rank_correlation``: Spearman correlation of the signed
    effects over words present in both tables. ``normalise`` maps both sides' words to one form
    (e.g. a lemmatiser) before matching. Content words (``role == "content"``) are left out of
    the model side, as they are not shortcut candidates.
    """
    model_entries = [e for e in model.entries if e.role != "content"]
    result: dict = {"k": k, "overlap_at_k": {}, "top": {}}
    for direction in DIRECTIONS:
        top_model = [normalise(e.word) for e in model_entries if e.direction == direction][:k]
        top_data = [normalise(e.word) for e in data.entries if e.direction == direction][:k]
        shared = [w for w in top_model if w in set(top_data)]
        result["overlap_at_k"][direction] = len(shared) / k if top_model else None
        result["top"][direction] = {"model": top_model, "data": top_data, "shared": shared}
    model_effect = {normalise(e.word): e.effect for e in model_entries}
    data_effect = {normalise(e.word): e.effect for e in data.entries}
    common = sorted(set(model_effect) & set(data_effect))
    result["n_common_words"] = len(common)
    result["rank_correlation"] = _spearman(
        [model_effect[w] for w in common], [data_effect[w] for w in common]
    )
    return result


def _spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho (Pearson correlation of average ranks); None with < 3 pairs or no spread."""
    if len(x) < 3:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return None if not math.isfinite(rho) else float(rho)
