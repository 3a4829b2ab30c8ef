"""Words of the user's prompt and the mapping from model tokens to those words.

Attribution is reported per *word of the user's prompt*, never per sub-word or template token.
A word is a run of word characters and combining marks (with inner apostrophes/hyphens: "can't",
"e-mail"), so Hindi vowel signs, Arabic vowel marks and NFD accents stay inside their word, or a
run of punctuation. Tokens are mapped to words by character offsets, so any fast tokenizer works
(byte-level BPE, SentencePiece, WordPiece, word-level).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import regex

from probe.query import Query

# \p{M}: combining marks (Mn, Mc, Me), which Python's \w does not include.
_WORD_RE = regex.compile(r"[\w\p{M}]+(?:['’\-][\w\p{M}]+)*|[^\w\p{M}\s]+")


@dataclass(frozen=True)
class Word:
    """One word of the prompt: its text and [start, end) character span in the prompt."""

    text: str
    start: int
    end: int

    @property
    def is_punct(self) -> bool:
        return not any(ch.isalnum() for ch in self.text)


def split_words(text: str) -> list[Word]:
    """Split a prompt into words and punctuation runs, with character spans."""
    return [Word(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(text)]


def align_tokens(
    offsets: Sequence[tuple[int, int]], words: Sequence[Word], region_start: int
) -> list[int]:
    """Index of the prompt word each token belongs to, or -1 for template/special tokens.

    ``offsets`` are token character spans in the chat-formatted text; the prompt starts at
    ``region_start`` in that text. A token belongs to the word it overlaps most (ties: the
    first); tokens overlapping no word (template text, pure whitespace) get -1.
    """
    owner: list[int] = []
    for start, end in offsets:
        best, best_overlap = -1, 0
        if end > start:
            for index, word in enumerate(words):
                overlap = min(end, region_start + word.end) - max(start, region_start + word.start)
                if overlap > best_overlap:
                    best, best_overlap = index, overlap
        owner.append(best)
    return owner


def _edited(prompt: Query | str, text: str) -> Query | str:
    """``text`` in the form of ``prompt``: a Query keeps its image, a str stays a str."""
    if isinstance(prompt, Query):
        return prompt.with_text(text)
    return text


@overload
def replace_word(prompt: str, word: Word, new: str) -> str: ...
@overload
def replace_word(prompt: Query, word: Word, new: str) -> Query: ...
def replace_word(prompt: Query | str, word: Word, new: str) -> Query | str:
    """The prompt with one word replaced, keeping the old word's capitalisation style.

    A Query comes back as a Query about the same image; a plain str as a str.
    """
    text = prompt.text if isinstance(prompt, Query) else prompt
    if word.text[:1].isupper() and new[:1].islower():
        new = new[:1].upper() + new[1:]
    return _edited(prompt, text[: word.start] + new + text[word.end :])


@overload
def delete_word(prompt: str, word: Word) -> str: ...
@overload
def delete_word(prompt: Query, word: Word) -> Query: ...
def delete_word(prompt: Query | str, word: Word) -> Query | str:
    """The prompt with one word removed (and one adjacent space, so no double spaces).

    A space is taken only where that neither doubles nor glues: "me, now" minus "," is
    "me now" (not "menow"), "a -b" minus "-" is "a b". A Query keeps its image.
    """
    text = prompt.text if isinstance(prompt, Query) else prompt
    start, end = word.start, word.end
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    if after == " " and (before == " " or not before or before.isspace()):
        end += 1
    elif before == " " and not (after.isalnum() or after == "_"):
        start -= 1
    return _edited(prompt, text[:start] + text[end:])
