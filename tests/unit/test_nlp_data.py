"""The NLTK data probe ships is found with no NLTK_DATA, and a user's own NLTK_DATA still wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_REPORT = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import nltk
    from probe import nlp
    missing = nlp.missing_resources()
    found = {name: str(nltk.data.find(loc + ".zip")) for name, loc in nlp.RESOURCES.items()
             if name not in missing}
    print(json.dumps({
        "missing": sorted(missing),
        "found": found,
        "shipped": str(nlp.SHIPPED_NLTK_DATA),
        "tags": nlp.universal_tags(["They", "shared", "the", "photo"]),
        "lemma": nlp.lemma("sharing"),
        "stop": sorted(nlp.stopword_set())[:3],
        "warnings": [str(w.message) for w in caught],
    }))
"""


def _run(env_update: dict[str, str], tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NLTK_DATA"}
    env.update(env_update)
    # HOME elsewhere so no ~/nltk_data of the developer's is found either.
    env["HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _REPORT],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    return json.loads(done.stdout)


def test_shipped_data_is_found_without_nltk_data(tmp_path):
    result = _run({}, tmp_path)
    assert result["missing"] == [] and result["warnings"] == []
    assert all(path.startswith(result["shipped"]) for path in result["found"].values())
    assert result["tags"] == ["PRON", "VERB", "DET", "NOUN"]
    assert result["lemma"] == "share"
    assert result["stop"]  # the English stopword list is there


def test_a_users_nltk_data_wins(tmp_path):
    own = tmp_path / "my_nltk_data" / "corpora" / "stopwords"
    own.mkdir(parents=True)
    (own / "english").write_text("zzzq\n", encoding="utf-8")
    result = _run({"NLTK_DATA": str(tmp_path / "my_nltk_data")}, tmp_path)
    assert result["stop"] == ["zzzq"]  # the user's corpus, not the shipped one
    assert result["missing"] == []  # everything else still comes from the shipped copy


_WARMUP = """
import sys, threading
import probe.audit as audit
from probe import nlp
assert "nltk" not in sys.modules  # nothing imported it yet: the check below can fail
seen = []
start = threading.Thread.start
def recording_start(self):
    seen.append(hasattr(sys.modules.get("nltk"), "data"))
    start(self)
threading.Thread.start = recording_start
audit.start_language_warmup().join()
print(seen, nlp.universal_tags(["They", "shared", "the", "photo"]))
"""


def test_nltk_is_imported_before_the_warmup_thread_starts(tmp_path):
    """The audit loads the tagger and WordNet in a thread while the model stages import scipy
    and scikit-learn; NLTK's own import pulls those in, and two threads importing them at once
    can leave ``nltk`` half-initialised for the rest of the run (seen in CI). So NLTK is fully
    imported on the main thread before the thread starts, and the thread's work still lands."""
    env = {k: v for k, v in os.environ.items() if k != "NLTK_DATA"}
    done = subprocess.run(
        [sys.executable, "-c", _WARMUP], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[True] ['PRON', 'VERB', 'DET', 'NOUN']", done.stdout
