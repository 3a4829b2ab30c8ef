"""Constraints on one-word edits. Each computes its values for a batch of edits (written to
attacks.jsonl whether or not it is enforced) and says which edits it accepts.

- ``ContentConstraint``: never touch a word that carries the request (nouns, numbers, jargon,
  adjectives modifying them; ``EditContext.content``), and never bring one in.
- ``PartOfSpeechConstraint``: the new word's tag in the edited sentence equals the old word's
  tag in the original; the one exception is a question word replacing (or inserted before) the
  lead word, accepted only where the fluency constraint accepts the result; a lead imperative
  (which the tagger reads as noun or verb at random) must be replaced by a word WordNet knows
  as a verb. Insertions and
  deletions are limited to adverbs, particles and politeness words ("please").
- ``FluencyConstraint``: the edit may not lower the text's mean per-token log-probability under
  a language model (the bare text, no chat template) by more than ``max_drop`` nats.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence

import torch

from probe.attack.transformations import QUESTION_WORDS, Edit, EditContext
from probe.nlp import (
    has_wordnet,
    inflect_like,
    is_content_word,
    tag_both,
    wordnet_corpus,
)
from probe.subject.packing import common_prefix
from probe.words import split_words

FREE_TAGS = frozenset({"ADV", "PRT"})  # tags an insertion or deletion may add or remove
FREE_WORDS = frozenset({"please", "kindly", "just"})


class Constraint:
    """Values for a batch of edits (dicts of AttackRecord fields) and an accept decision."""

    name = "constraint"
    cheap = True  # cheap constraints filter before margin scoring, others before verification

    def values(self, context: EditContext, edits: Sequence[Edit]) -> list[dict]:
        raise NotImplementedError

    def accepts(self, values: dict) -> bool:
        raise NotImplementedError


class ContentConstraint(Constraint):
    name = "content"

    def values(self, context: EditContext, edits: Sequence[Edit]) -> list[dict]:
        return [{"content_word": self._touches(context, e)} for e in edits]

    @staticmethod
    def _touches(context: EditContext, edit: Edit) -> bool:
        """The edit removes or replaces a content word, or brings one in ("Ask about ..." ->
        "Bomb about ..." changes what is asked as surely as "bread" -> "bomb")."""
        if edit.kind != "insertion" and edit.position in context.content:
            return True
        new = edit.new_word.lower()
        return bool(new) and (new in context.content_vocabulary or is_content_word(new, None))

    def accepts(self, values: dict) -> bool:
        return not values["content_word"]


class PartOfSpeechConstraint(Constraint):
    name = "pos"

    def values(self, context: EditContext, edits: Sequence[Edit]) -> list[dict]:
        if context.tags is None:
            return [{"pos_after": None, "pos_rule": "untagged", "pos_ok": True} for _ in edits]
        return [self._one(context, e) for e in edits]

    def _one(self, context: EditContext, edit: Edit) -> dict:
        new = edit.new_word.lower()
        lead = edit.position == context.lead
        if edit.kind == "deletion":
            old = edit.old_word.lower()
            ok = (edit.replaced_pos in FREE_TAGS and old not in QUESTION_WORDS) or old in FREE_WORDS
            return {"pos_after": None, "pos_rule": "deletion", "pos_ok": ok}
        words = [w.text for w in split_words(edit.variant.text)]
        tagged = tag_both(words)
        assert tagged is not None  # only called when context.tags is set, so the tagger is there
        tags, fine = tagged
        after = tags[edit.position]
        if edit.kind == "insertion":
            if lead and new in QUESTION_WORDS:
                # "What describe the details ..." is no question: not before a lead verb.
                ok = not _can_be_verb(context.words[context.lead].text)
                return {"pos_after": after, "pos_rule": "lead-question", "pos_ok": ok}
            ok = after in FREE_TAGS or new in FREE_WORDS
            return {"pos_after": after, "pos_rule": "insertion", "pos_ok": ok}
        if lead and new in QUESTION_WORDS and edit.old_word.lower() not in QUESTION_WORDS:
            # The paper's "What ..." form: a question word for the lead verb (fluency decides).
            return {"pos_after": after, "pos_rule": "lead-question", "pos_ok": True}
        if lead and edit.old_word.lower() in QUESTION_WORDS and _can_be_verb(new):
            # The paper's "Share ..." form for a lead question, only where the question word
            # opens a phrase ("What about X" -> "Share about X"), never a clause ("What is the
            # person ..." -> "Share is the person ...").
            following = context.tag(context.alnum[1]) if len(context.alnum) > 1 else None
            ok = following == "ADP"
            return {"pos_after": after, "pos_rule": "lead-question", "pos_ok": ok}
        if lead and _can_be_verb(edit.old_word) and _can_be_verb(new):
            # The tagger reads lead imperatives ("Share ...", "Talk ...") as nouns or verbs at
            # random; a lead verb must be replaced by a word that can be a verb.
            ok = after in _LEAD_VERB_READINGS and edit.replaced_pos in _LEAD_VERB_READINGS
            return {"pos_after": after, "pos_rule": "lead-verb", "pos_ok": ok}
        assert context.fine_tags is not None
        if after == edit.replaced_pos and _same_form(
            edit.old_word, new, after, context.fine_tags[edit.position], fine[edit.position]
        ):
            return {"pos_after": after, "pos_rule": "same", "pos_ok": True}
        return {"pos_after": after, "pos_rule": "changed", "pos_ok": False}

    def accepts(self, values: dict) -> bool:
        return bool(values["pos_ok"])


_LEAD_VERB_READINGS = frozenset({"VERB", "NOUN", "ADJ"})


def _same_form(old: str, new: str, tag: str, old_penn: str, new_penn: str) -> bool:
    """Whether ``new`` fills ``old``'s grammatical slot, beyond sharing a universal tag.

    Verbs and nouns: the same inflection ("is" -> "be" and "describe" -> "explained" are not;
    lemminflect, since the tagger's VB/VBP/VBZ for imperatives is noise). Other words: the same
    Penn tag ("What is" -> "I is": WP -> PRP, both PRON; "how" -> "quickly": WRB -> RB)."""
    if tag in ("VERB", "NOUN"):
        old, new = old.lower(), new.lower()
        return inflect_like(new, old, tag) == new and inflect_like(old, new, tag) == old
    return old_penn == new_penn


@functools.cache
def _can_be_verb(word: str) -> bool:
    """Whether WordNet knows ``word`` as a verb (False without WordNet)."""
    if not has_wordnet():
        return False
    wordnet = wordnet_corpus()
    return bool(wordnet.synsets(word.lower(), pos=wordnet.VERB))


_PASS_COST = 8  # a forward pass's fixed cost, in tokens (for splitting batches)


class BareTextLM:
    """Mean per-token log-probability of bare texts (no chat template) under a causal LM."""

    def __init__(self, model, tokenizer, batch_size: int = 16) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        start = tokenizer.bos_token_id
        if start is None:
            start = tokenizer.eos_token_id
        self.start = start
        pad = tokenizer.pad_token_id
        self.pad = pad if pad is not None else (start if start is not None else 0)
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._base: dict[tuple[int, ...], torch.Tensor] = {}  # each base's token log-probs

    def _row(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ([self.start] if self.start is not None else []) + list(ids)

    @torch.no_grad()
    def mean_log_probs(self, texts: Sequence[str], base: str | None = None) -> list[float]:
        """Mean per-token log-probability of each text.

        With ``base`` (the texts are edits of it) the tokens a text shares with ``base`` from
        its start are not run again: their log-probs are ``base``'s, and the text's rest runs
        on the KV cache of that shared part (one run of ``base`` per base, one cache per batch).
        """
        rows = [self._row(t) for t in texts]
        if base is None:
            shared = [0] * len(rows)
            base_logp = torch.zeros(0)
            base_row: list[int] = []
        else:
            base_row = self._row(base)
            base_logp = self._base_log_probs(base_row)
            # Cached tokens: shared with base, and at least one token left to run.
            shared = [max(0, min(common_prefix(base_row, r) - 1, len(r) - 2)) for r in rows]
        out = [0.0] * len(rows)
        for batch in self._batches(rows, shared):
            cached = min(shared[i] for i in batch)
            totals = self._rest_log_prob_sums([rows[i][cached:] for i in batch], base_row[:cached])
            prefix_sum = float(base_logp[:cached].sum())
            for i, total in zip(batch, totals, strict=True):
                out[i] = (prefix_sum + total) / max(1, len(rows[i]) - 1)
        return out

    def _batches(self, rows: list[list[int]], shared: list[int]) -> list[list[int]]:
        """Split the rows (by shared length, longest first) into batches that run the fewest
        tokens: a batch runs every row from its smallest shared length, padded to its longest
        rest, plus that prefix once and a fixed cost per forward pass."""
        order = sorted(range(len(rows)), key=lambda i: -shared[i])
        cost = [0.0] + [float("inf")] * len(order)  # cost[j]: best split of order[:j]
        cut = [0] * (len(order) + 1)
        for j in range(1, len(order) + 1):
            for i in range(max(0, j - self.batch_size), j):
                cached = shared[order[j - 1]]  # the smallest in order[i:j]
                width = max(len(rows[k]) for k in order[i:j]) - cached
                total = cost[i] + (j - i) * width + cached + _PASS_COST
                if total < cost[j]:
                    cost[j], cut[j] = total, i
        batches = []
        j = len(order)
        while j:
            batches.append(order[cut[j] : j])
            j = cut[j]
        return batches[::-1]

    def _base_log_probs(self, row: list[int]) -> torch.Tensor:
        """Log-prob of each token of ``row`` after the first (kept per base)."""
        key = tuple(row)
        if key not in self._base:
            self._base[key] = self._token_log_probs([row], None)[0][0]
        return self._base[key]

    def _rest_log_prob_sums(self, rests: list[list[int]], prefix: list[int]) -> list[float]:
        """Sum of the log-probs of each rest's tokens after its first, following ``prefix``."""
        cache = None
        if prefix:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)
            device = next(self.model.parameters()).device
            self.model(
                input_ids=torch.tensor([prefix], device=device),
                use_cache=True,
                **{self._cache_kwarg: cache},
            )
            cache.batch_repeat_interleave(len(rests))
        picked, valid = self._token_log_probs(rests, cache, len(prefix))
        return (picked * valid).sum(1).cpu().tolist()

    def _token_log_probs(
        self, rows: list[list[int]], cache, cached: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded rows (after ``cached`` tokens in ``cache``): each token's log-prob
        given what precedes it, from the second on, and a mask of the real tokens."""
        device = next(self.model.parameters()).device
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), cached + width), dtype=torch.long)
        mask[:, :cached] = 1
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, cached : cached + len(row)] = 1
        extra = {self._cache_kwarg: cache, "use_cache": True} if cache is not None else {}
        logits = self.model(
            input_ids=ids.to(device), attention_mask=mask.to(device), **extra
        ).logits
        logp = logits[:, :-1].float().log_softmax(-1)
        picked = logp.gather(2, ids[:, 1:, None].to(device))[..., 0]
        return picked, mask[:, cached + 1 :].to(device).float()


# Calibrated in benchmarks/RESULTS.md ("Fluency threshold") on natural rewordings vs the broken
# edits the earlier attack reported: 0.5 nats/token for a real LM (SmolLM2), 1.5 for a toy LM
# (under 20M parameters, e.g. the demo model, whose per-token log-probs are much flatter).
MAX_DROP_REAL_LM = 0.5
MAX_DROP_TOY_LM = 1.5


def default_max_drop(model) -> float:
    """The calibrated fluency bound for an LM of this size."""
    from probe.subject.text import SMALL_MODEL_PARAMETERS

    size = sum(p.numel() for p in model.parameters())
    return MAX_DROP_TOY_LM if size < SMALL_MODEL_PARAMETERS else MAX_DROP_REAL_LM


class FluencyConstraint(Constraint):
    """Change in mean per-token log-prob (edited minus original) must be >= -``max_drop``."""

    name = "fluency"
    cheap = False

    def __init__(self, lm: BareTextLM, max_drop: float = MAX_DROP_REAL_LM) -> None:
        self.lm = lm
        self.max_drop = max_drop
        self.evaluations = 0
        self._base: dict[str, float] = {}

    def values(self, context: EditContext, edits: Sequence[Edit]) -> list[dict]:
        if context.text not in self._base:
            self._base[context.text] = self.lm.mean_log_probs([context.text])[0]
            self.evaluations += 1
        base = self._base[context.text]
        texts = [e.variant.text for e in edits]
        scores = self.lm.mean_log_probs(texts, base=context.text) if texts else []
        self.evaluations += len(texts)
        return [{"fluency": s - base, "fluency_ok": s - base >= -self.max_drop} for s in scores]

    def accepts(self, values: dict) -> bool:
        return bool(values["fluency_ok"])


def null_values() -> dict:
    """Values of a constraint that was not computed (no LM for fluency)."""
    return {"fluency": None, "fluency_ok": None}
