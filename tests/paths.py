"""Where the tests find the repository and the team's shared data (``../shared`` beside it)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
