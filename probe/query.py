"""Query: what a subject is asked, the prompt text and (for a VLM) the image shown with it.

A frozen record, so equality and hashing include the image: two queries with the same text and
different images are different queries. Edits go through ``with_text`` (and the word-edit
helpers in ``probe.words``, which take and return a Query), so an edited prompt is always a
prompt about the same image; no string operation can drop it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Query:
    """Prompt text and the image shown with it (None: text only)."""

    text: str
    image: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"Query text must be a str, not {type(self.text).__name__}")
        if self.image is not None and not isinstance(self.image, Path):
            object.__setattr__(self, "image", Path(self.image))

    def with_text(self, text: str) -> Query:
        """The same image with new text (the one way to edit a query)."""
        return replace(self, text=text)


def as_query(prompt: Query | str) -> Query:
    """``prompt`` as a Query (a plain str is a text-only query)."""
    return prompt if isinstance(prompt, Query) else Query(prompt)
