"""Edit replay: run A's verified one-word edits re-scored and re-generated on model B.

The direct test of "the fix removed the shortcut", independent of B's own search: if B no
longer relies on the word, A's proofs stop flipping it. Only the attacks.jsonl contract fields
are read (id, original, variant, position, old_word, new_word, margin_before/after, flipped,
judged_refusal_before/after), and ``image`` where A's prompt had one, so a VLM is replayed
with the image A saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from probe.compare.stats import rate
from probe.errors import ProbeError
from probe.judge import RefusalJudge
from probe.query import Query
from probe.subject.text import Subject

CONTRACT_FIELDS = (
    "id",
    "original",
    "variant",
    "old_word",
    "new_word",
    "flipped",
    "judged_refusal_before",
    "judged_refusal_after",
)


@dataclass
class ReplayRecord:
    """One of A's edits on model B; one line of a replay JSONL file.

    ``target`` is the way A's edit pushed ("compliance" when A refused the original).
    ``applicable``: B judged the original as A did, so the edit can flip B the same way.
    ``flipped``: B's verdict on the variant is the target and differs from its verdict on the
    original, i.e. the edit still flips B.
    """

    id: str
    original: str
    variant: str
    position: int | None
    old_word: str
    new_word: str
    target: str
    flipped_a: bool
    margin_before_a: float | None
    margin_after_a: float | None
    margin_before: float
    margin_after: float
    judged_refusal_before: bool
    judged_refusal_after: bool
    response_before: str
    response_after: str
    applicable: bool
    flipped: bool
    image: str | None = None

    def to_record(self) -> dict:
        record = asdict(self)
        if self.image is None:
            del record["image"]
        for key in ("margin_before", "margin_after"):
            record[key] = round(record[key], 6)
        return record


@dataclass
class ReplayResult:
    """All replayed edits of one run on one model, and the headline shares."""

    source: str
    model: str
    records: list[ReplayRecord]

    def summary(self) -> dict:
        """Share of A's proofs (verified flips) that still flip B, overall and per direction;
        the rate is over the applicable proofs (B judged the original as A did)."""
        proofs = [r for r in self.records if r.flipped_a]
        by_target: dict[str, dict | None] = {}
        out: dict = {
            "source": self.source,
            "model": self.model,
            "edits_replayed": len(self.records),
            "proofs": len(proofs),
            "applicable": sum(r.applicable for r in proofs),
            "still_flip": rate([r.flipped for r in proofs if r.applicable]),
            "still_flip_of_all_proofs": rate([r.flipped for r in proofs]),
            "by_target": by_target,
            "by_new_word": {},
        }
        for target in ("compliance", "refusal"):
            chosen = [r for r in proofs if r.target == target and r.applicable]
            by_target[target] = rate([r.flipped for r in chosen])
        words: dict[str, list[bool]] = {}
        for r in proofs:
            if r.applicable:
                words.setdefault(r.new_word.lower(), []).append(r.flipped)
        out["by_new_word"] = {
            w: rate(flags) for w, flags in sorted(words.items(), key=lambda kv: -len(kv[1]))
        }
        return out


def read_edits(records: Sequence[dict], where: str) -> list[dict]:
    """Check the contract fields of attacks.jsonl records (one-line error naming the record)."""
    for number, record in enumerate(records, 1):
        missing = [k for k in CONTRACT_FIELDS if k not in record]
        if missing:
            raise ProbeError(f"{where} record {number}: lacks {', '.join(missing)}")
    return list(records)


def replay_edits(
    records: Sequence[dict],
    subject: Subject,
    judge: RefusalJudge,
    *,
    max_new_tokens: int = 24,
    proofs_only: bool = True,
    source: str = "",
    model: str = "",
) -> ReplayResult:
    """Re-score (margin) and re-generate (greedy + judge) each edit's original and variant on
    ``subject``; with ``proofs_only``, only A's verified flips are replayed."""
    chosen = [r for r in records if r.get("flipped") or not proofs_only]
    if not chosen:
        return ReplayResult(source, model, [])

    def query(record: dict, text_key: str) -> Query:
        """The edit's text with the image A showed it with (an image prompt keeps its image)."""
        image = record.get("image")
        return Query(str(record[text_key]), Path(image) if isinstance(image, str) else None)

    originals = list(dict.fromkeys(query(r, "original") for r in chosen))
    variants = [query(r, "variant") for r in chosen]
    margins = subject.prompt_margins(originals + variants).tolist()
    responses = subject.generate(originals + variants, max_new_tokens)
    verdicts = judge(responses)
    before = {q: (margins[k], responses[k], verdicts[k]) for k, q in enumerate(originals)}
    out = []
    for k, r in enumerate(chosen, len(originals)):
        margin_b, response_b, refused_b = before[query(r, "original")]
        target = "compliance" if r["judged_refusal_before"] else "refusal"
        refused_after = verdicts[k]
        out.append(
            ReplayRecord(
                id=str(r["id"]),
                original=str(r["original"]),
                variant=str(r["variant"]),
                position=r.get("position"),
                old_word=str(r["old_word"]),
                new_word=str(r["new_word"]),
                target=target,
                flipped_a=bool(r["flipped"]),
                margin_before_a=r.get("margin_before"),
                margin_after_a=r.get("margin_after"),
                margin_before=float(margin_b),
                margin_after=float(margins[k]),
                judged_refusal_before=bool(refused_b),
                judged_refusal_after=bool(refused_after),
                response_before=response_b,
                response_after=responses[k],
                applicable=bool(refused_b) == bool(r["judged_refusal_before"]),
                flipped=bool(refused_after) == (target == "refusal")
                and bool(refused_after) != bool(refused_b),
                image=r["image"] if isinstance(r.get("image"), str) else None,
            )
        )
    return ReplayResult(source, model, out)
