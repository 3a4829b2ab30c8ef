"""Locate shipped lexicon files, installed or straight from a source checkout.

Installed, ``lexicons/`` is the package ``probe.lexicons``; in a checkout run with
``PYTHONPATH`` (not installed) that package does not exist, so fall back to the repo folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from probe.errors import ProbeError

_REPO_LEXICONS = Path(__file__).resolve().parent.parent / "lexicons"


def lexicon_path(name: str) -> Path:
    """Path of the shipped lexicon file ``name`` (e.g. ``"judge_keywords.json"``)."""
    try:
        resource = resources.files("probe.lexicons") / name
    except ModuleNotFoundError:
        resource = None
    if resource is not None and resource.is_file():
        return Path(str(resource))
    candidate = _REPO_LEXICONS / name
    if candidate.is_file():
        return candidate
    raise ProbeError(f"shipped lexicon {name!r} not found: is probe installed correctly?")
