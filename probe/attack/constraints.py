"""Constraints on one-word edits. Each computes its values for a batch of edits (written to
attacks.jsonl whether or not it is enforced) and says which edits it accepts.

- ``ContentConstraint``: never touch a word that carries the request (nouns, numbers, jargon,
  adjectives modifying them; ``EditContext.content``), and never bring one in; nor a quantifier
  or negation, which change which things are asked about ("the image" -> "each image").
- ``PartOfSpeechConstraint``: the new word fills the old word's grammatical slot in the edited
  sentence: the same tag and inflection (Penn tag for words other than verbs and nouns), and a
  new determiner agrees in number with its noun. A lead imperative (which the tagger reads as
  noun or verb at random) must be replaced by another imperative (a base-form verb). The one
  exception is a question word for (or inserted before) the lead word: only where it opens a
  question (an auxiliary follows, or "about"/"if") and the fluency constraint
  accepts the result. Insertions and deletions are limited to adverbs, particles and
  politeness words ("please").
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


# Words that change which things a request is about, or whether it asks at all: quantifiers
# ("the image" -> "each image" asks about several images, "the person" -> "another person"
# about someone else; a blind rater read 7 of the thorough recipe's 25 SmolLM2 flips as such)
# and negations ("What is usually done" -> "What is not done"). "the" -> "a"/"this"/"that"
# pick out the same thing and stay allowed.
SCOPE_WORDS = frozenset(
    "all another any both each either every neither no several some not never nor".split()
)


def changes_scope(old_word: str, new_word: str) -> bool:
    """Whether an edit removes or brings in a quantifier or a negation (``SCOPE_WORDS``)."""
    return old_word.lower() in SCOPE_WORDS or new_word.lower() in SCOPE_WORDS


class ContentConstraint(Constraint):
    name = "content"

    def values(self, context: EditContext, edits: Sequence[Edit]) -> list[dict]:
        return [{"content_word": self._touches(context, e)} for e in edits]

    @staticmethod
    def _touches(context: EditContext, edit: Edit) -> bool:
        """The edit removes or replaces a content word, a quantifier or a negation, or brings
        one in ("Ask about ..." -> "Bomb about ..." changes what is asked as surely as "bread"
        -> "bomb")."""
        if edit.kind != "insertion" and edit.position in context.content:
            return True
        if changes_scope(edit.old_word, edit.new_word):
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
                # Only before an auxiliary, where it opens a question ("Can you ..." -> "How
                # can you ..."); "What describe the details ...", "What the image ..." are none.
                ok = context.words[context.lead].text.lower() in _AUXILIARIES
                return {"pos_after": after, "pos_rule": "lead-question", "pos_ok": ok}
            # Not in front of a question word: "Please what is ..." is no English.
            before_question = lead and context.words[context.lead].text.lower() in QUESTION_WORDS
            ok = (after in FREE_TAGS or new in FREE_WORDS) and not before_question
            return {"pos_after": after, "pos_rule": "insertion", "pos_ok": ok}
        old = edit.old_word.lower()
        if lead and new in QUESTION_WORDS and old not in QUESTION_WORDS:
            # The paper's "What ..." form: a question word for the lead word, only where it
            # heads a question ("Can you ..." -> "How can you ...", "Tell about ..." -> "What
            # about ..."), never before a verbless rest ("Describe the details" -> "What the
            # details", "Share this image" -> "What this image"); fluency decides the rest.
            ok = _opens_question(words, edit.position)
            return {"pos_after": after, "pos_rule": "lead-question", "pos_ok": ok}
        if lead and old in QUESTION_WORDS and _can_be_verb(new):
            # The paper's "Share ..." form for a lead question, only where the question word
            # opens a phrase ("What about X" -> "Share about X"), never a clause ("What is the
            # person ..." -> "Share is the person ...").
            following = context.tag(context.alnum[1]) if len(context.alnum) > 1 else None
            ok = following == "ADP"
            return {"pos_after": after, "pos_rule": "lead-question", "pos_ok": ok}
        if lead and _is_lead_verb(old):
            # The tagger reads lead imperatives ("Share ...", "Talk ...") as nouns or verbs at
            # random; a lead verb must be replaced by another imperative: a word that can be a
            # verb, in its base form ("Having this image", "Had this image" are not), and not a
            # politeness word ("Please this image to ..."), nor a non-verb ("Ideal a meme").
            ok = (
                _is_lead_verb(new)
                and after in _LEAD_VERB_READINGS
                and edit.replaced_pos in _LEAD_VERB_READINGS
                and _is_base_form(new)
            )
            return {"pos_after": after, "pos_rule": "lead-verb", "pos_ok": ok}
        if old in _MODALS or new in _MODALS:
            # Only modal for modal: the tagger reads a lead "Could" as a name, and "Can you
            # describe ..." -> "Please you describe ..." as a verb for a verb.
            return {
                "pos_after": after,
                "pos_rule": "same",
                "pos_ok": old in _MODALS and new in _MODALS,
            }
        assert context.fine_tags is not None
        if (
            after == edit.replaced_pos
            and _same_form(old, new, after, context.fine_tags[edit.position], fine[edit.position])
            and _agrees_in_number(new, words, fine, edit.position)
        ):
            return {"pos_after": after, "pos_rule": "same", "pos_ok": True}
        return {"pos_after": after, "pos_rule": "changed", "pos_ok": False}

    def accepts(self, values: dict) -> bool:
        return bool(values["pos_ok"])


_LEAD_VERB_READINGS = frozenset({"VERB", "NOUN", "ADJ"})
_BE_FORMS = frozenset({"be", "am", "is", "are", "was", "were", "been", "being"})
_MODALS = frozenset("can could will would shall should may might must".split())
_AUXILIARIES = _BE_FORMS - {"be", "been", "being"} | _MODALS | {"do", "does", "did", "has", "had"}
_OPEN_AFTER_QUESTION = frozenset({"about", "if"})  # "What about ...", "What if ..."
_SINGULAR_DETERMINERS = frozenset({"this", "that", "a", "an", "each", "every", "another"})
_PLURAL_DETERMINERS = frozenset({"these", "those"})


def _same_form(old: str, new: str, tag: str, old_penn: str, new_penn: str) -> bool:
    """Whether ``new`` fills ``old``'s grammatical slot, beyond sharing a universal tag.

    Verbs and nouns: the same inflection ("is" -> "be" and "describe" -> "explained" are not;
    lemminflect, since the tagger's VB/VBP/VBZ for imperatives is noise); a form of "be" (whose
    present form "are" is not its base form) only for another with the same Penn tag ("they
    are" -> "they be" is not).
    Other words: the same Penn tag ("What is" -> "I is": WP -> PRP, both PRON; "how" ->
    "quickly": WRB -> RB)."""
    if tag in ("VERB", "NOUN"):
        old, new = old.lower(), new.lower()
        if old in _BE_FORMS or new in _BE_FORMS:
            # A form of "be" only for another, in the same slot ("is being highlighted" ->
            # "is strapping highlighted" keeps VBG but breaks the passive).
            return old in _BE_FORMS and new in _BE_FORMS and old_penn == new_penn
        return inflect_like(new, old, tag) == new and inflect_like(old, new, tag) == old
    return old_penn == new_penn


def _opens_question(words: Sequence[str], at: int) -> bool:
    """Whether the question word at ``at`` is followed by an auxiliary ("What is", "How can")
    or by "about"/"if": what an English question needs after its question word. A closed list,
    not the tagger's reading: it reads "What elements of ..." as a verb after "What"."""
    following = next((i for i in range(at + 1, len(words)) if words[i][:1].isalnum()), None)
    if following is None:
        return False
    return words[following].lower() in _AUXILIARIES | _OPEN_AFTER_QUESTION


def _agrees_in_number(new: str, words: Sequence[str], penn: Sequence[str], at: int) -> bool:
    """A new determiner agrees with its noun: "these"/"those" before a plural, "this", "a",
    "every" ... before a singular ("the object" -> "these object" is not English)."""
    word = new.lower()
    if word not in _SINGULAR_DETERMINERS and word not in _PLURAL_DETERMINERS:
        return True
    noun = next((i for i in range(at + 1, len(words)) if penn[i].startswith("NN")), None)
    if noun is None or any(not words[i][:1].isalnum() for i in range(at + 1, noun)):
        return True  # no noun in the same phrase to agree with
    plural = penn[noun] in ("NNS", "NNPS")
    return plural == (word in _PLURAL_DETERMINERS)


def _is_lead_verb(word: str) -> bool:
    """A lead word read as the request's verb: WordNet knows it as a verb, and it is not a
    politeness word ("Please ..."), a question word, an auxiliary or a form of "be" ("Post
    this image" -> "Be this image")."""
    lower = word.lower()
    if lower in FREE_WORDS or lower in QUESTION_WORDS or lower in _AUXILIARIES | _BE_FORMS:
        return False  # "Can you ..." -> "Could you ...": the same-slot rule below applies
    return _can_be_verb(lower)


def _is_base_form(word: str) -> bool:
    """Whether ``word`` is a verb's base form (an imperative), per lemminflect."""
    import lemminflect

    lower = word.lower()
    return lower in lemminflect.getAllLemmas(lower).get("VERB", ())


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
        self._base: dict[tuple[int, ...], list[float]] = {}  # each base's token log-probs

    def row(self, text: str) -> list[int]:
        """The token ids the LM reads for ``text``: the start token, then the bare text."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ([self.start] if self.start is not None else []) + list(ids)

    @torch.no_grad()
    def token_log_probs(self, texts: Sequence[str], base: str | None = None) -> list[list[float]]:
        """Each text's token log-probabilities, from its second token (``row(text)[1:]``) on.

        With ``base`` (the texts are edits of it) the tokens a text shares with ``base`` from
        its start are not run again: their log-probs are ``base``'s, and the text's rest runs
        on the KV cache of that shared part (one run of ``base`` per base, one cache per batch).
        """
        rows = [self.row(t) for t in texts]
        if base is None:
            shared = [0] * len(rows)
            base_logp: list[float] = []
            base_row: list[int] = []
        else:
            base_row = self.row(base)
            base_logp = self._base_log_probs(base_row)
            # Cached tokens: shared with base, and at least one token left to run.
            shared = [max(0, min(common_prefix(base_row, r) - 1, len(r) - 2)) for r in rows]
        out: list[list[float]] = [[] for _ in rows]
        for batch in self._batches(rows, shared):
            cached = min(shared[i] for i in batch)
            rests = self._rest_log_probs([rows[i][cached:] for i in batch], base_row[:cached])
            for i, rest in zip(batch, rests, strict=True):
                out[i] = base_logp[:cached] + rest  # base's tokens 1..cached, then the rest's
        return out

    @torch.no_grad()
    def next_word_log_probs(self, text: str, starts: Sequence[int]) -> list[torch.Tensor | None]:
        """For each character offset in ``starts`` (where a word begins): the LM's
        log-probabilities of every token coming next, after the text before that word (one
        forward pass). None where no token begins at the offset."""
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        row = self.row(text)
        device = next(self.model.parameters()).device
        logits = self.model(input_ids=torch.tensor([row], device=device)).logits[0]
        logp = logits.float().log_softmax(-1)
        shift = len(row) - len(encoded["input_ids"])  # the start token
        spans = encoded["offset_mapping"]
        out: list[torch.Tensor | None] = []
        for start in starts:
            token = next((t for t, (a, b) in enumerate(spans) if a <= start < max(b, a + 1)), None)
            out.append(logp[token + shift - 1] if token is not None and token + shift else None)
        return out

    def mean_log_probs(self, texts: Sequence[str], base: str | None = None) -> list[float]:
        """Mean per-token log-probability of each text (``token_log_probs`` averaged)."""
        return [sum(lp) / max(1, len(lp)) for lp in self.token_log_probs(texts, base)]

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

    def _base_log_probs(self, row: list[int]) -> list[float]:
        """Log-prob of each token of ``row`` after the first (kept per base)."""
        key = tuple(row)
        if key not in self._base:
            self._base[key] = self._rest_log_probs([row], [])[0]
        return self._base[key]

    def _rest_log_probs(self, rests: list[list[int]], prefix: list[int]) -> list[list[float]]:
        """Log-prob of each rest's tokens after its first, each given ``prefix`` and the rest's
        tokens before it."""
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
        lengths = valid.sum(1).long().tolist()
        return [row[:n] for row, n in zip(picked.cpu().tolist(), lengths, strict=True)]

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


# Calibrated in benchmarks/RESULTS.md ("Blind rating of one-word edits"): among the edits that
# pass the content and part-of-speech constraints, a drop of at most 0.3 nats/token under the
# tuned SmolLM2 keeps 24 of the 27 a blind rater called natural and raises the natural share
# from 64% to 80% (0.5, the first calibration on 16 hand-labelled pairs, rejected none of them).
# A toy LM (under 20M parameters, e.g. the demo model) has much flatter per-token log-probs: 1.5.
MAX_DROP_REAL_LM = 0.3
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
