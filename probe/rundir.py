"""The run directory on disk: ownership, the lock, and how each stage's files are written.

A run directory is probe's own: it carries a marker (``.probe/run.json``), so probe never writes
into a folder it did not create, and it is locked (``.probe/lock``, an ``flock`` that the kernel
drops when the process dies, even by SIGKILL) while a run is active. Per-prompt records are
appended and flushed as they are made, so an interrupted run keeps its work; JSON summaries are
replaced atomically (temp file + rename), so a reader never sees half a file. The report stage
only reads (``probe.report``), and deletes only the figures listed in the figures manifest.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from probe.errors import ProbeError, decode_text, read_bytes, read_text
from probe.lexicon.table import TriggerLexicon

STATE = ".probe"
MARKER = f"{STATE}/run.json"
LOCK = f"{STATE}/lock"
FIGURES_MANIFEST = "figures/.probe-figures.json"


def _file_mode() -> int:
    """The mode a plain ``open`` would give a new file (temp files start private)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _file_mode()

# Files a run writes at the top level of its directory (all of them probe's own).
RECORD_FILES = ("responses.jsonl", "attributions.jsonl", "attacks.jsonl", "failures.jsonl")
DERIVED_FILES = (
    "summary.json",
    "lexicon.json",
    "lexicon.csv",
    "data_cues.json",
    "report.html",
    "report.md",
)


# ------------------------------------------------------------------ reading and writing


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Write ``records`` as a whole JSONL file, atomically."""
    with atomic_writer(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """Every record of a JSONL file (none if it is absent); a bad line is a ``ProbeError``."""
    if not path.is_file():
        return []
    return _parse_lines(path, read_text(path))


def read_appended(path: Path) -> list[dict]:
    """Records of a file probe appends to, dropping a last line cut short by a kill.

    The file is truncated to its last complete line, so later appends start on a fresh line.
    """
    if not path.is_file():
        return []
    data = read_bytes(path)
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    return _parse_lines(path, decode_text(data[:end], path))


def _parse_lines(path: Path, text: str) -> list[dict]:
    """The JSON value of each non-blank line; a bad line is a ``ProbeError`` naming it.

    Lines end at a newline only: the writers keep U+2028 and other Unicode line breaks raw inside
    strings (``ensure_ascii=False``), which ``str.splitlines`` would cut."""
    records = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ProbeError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise ProbeError(f"{path} line {number}: JSON nested too deeply") from None
    return records


class Appender:
    """Appends JSONL records and flushes each batch, so a killed run keeps every line written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] = open(path, "a", encoding="utf-8")

    def write(self, records: Iterable[dict]) -> None:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if lines:
            self._handle.write(lines)
            self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class atomic_writer:
    """``with atomic_writer(path) as handle:`` writes a temp file beside ``path``, then renames.

    On an exception the temp file is removed and ``path`` is left as it was.
    """

    def __init__(self, path: Path, newline: str | None = None) -> None:
        self.path = Path(path)
        self.newline = newline

    def __enter__(self) -> IO[str]:
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        self._tmp = Path(name)
        self._handle = os.fdopen(fd, "w", encoding="utf-8", newline=self.newline)
        return self._handle

    def __exit__(self, kind, value, traceback) -> None:
        self._handle.close()
        if kind is None:
            os.chmod(self._tmp, _MODE)
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def write_json(path: Path, payload: object) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_writer(path) as handle:
        handle.write(json.dumps(payload, indent=1) + "\n")


def write_summary(run_dir: Path, summary: dict) -> None:
    write_json(run_dir / "summary.json", summary)


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json, or None when there is none (or it is not a JSON object)."""
    try:
        summary = json.loads(read_text(run_dir / "summary.json"))
    except (ProbeError, ValueError, RecursionError):
        return None
    return summary if isinstance(summary, dict) else None


def write_lexicon_files(lexicon: TriggerLexicon, json_path: Path, csv_path: Path) -> None:
    """The lexicon as JSON and CSV, each replaced atomically."""
    for path, write in ((json_path, lexicon.to_json), (csv_path, lexicon.to_csv)):
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            write(name)
            os.chmod(name, _MODE)
            os.replace(name, path)
        finally:
            Path(name).unlink(missing_ok=True)


def write_lexicon(run_dir: Path, lexicon: TriggerLexicon) -> None:
    write_lexicon_files(lexicon, run_dir / "lexicon.json", run_dir / "lexicon.csv")


# ------------------------------------------------------------------ figures manifest


def read_figure_manifest(figures_dir: Path) -> list[str]:
    """Names of the figure files probe wrote into ``figures_dir`` (from its manifest): only
    plain ``.png`` names directly in the folder, so a tampered manifest cannot reach elsewhere."""
    try:
        manifest = json.loads(read_text(figures_dir / Path(FIGURES_MANIFEST).name))
    except (ProbeError, ValueError, RecursionError):
        return []
    names = manifest.get("files") if isinstance(manifest, dict) else None
    return [
        n
        for n in (names if isinstance(names, list) else [])
        if isinstance(n, str) and n.endswith(".png") and Path(n).name == n
    ]


def write_figure_manifest(figures_dir: Path, names: Iterable[str]) -> None:
    write_json(
        figures_dir / Path(FIGURES_MANIFEST).name,
        {"written_by": "probe", "files": sorted(set(names))},
    )


def remove_own_figures(figures_dir: Path, keep: Iterable[str] = ()) -> None:
    """Delete the figures the manifest lists (except ``keep``); a user's own files stay."""
    keep = set(keep)
    for name in read_figure_manifest(figures_dir):
        path = figures_dir / name
        if name not in keep and path.is_file() and not path.is_symlink():
            path.unlink()


# ------------------------------------------------------------------ ownership and the lock


def is_run_dir(path: Path) -> bool:
    return (path / MARKER).is_file()


def _holder(lock_path: Path) -> str:
    try:
        return lock_path.read_text(encoding="utf-8").strip() or "another process"
    except OSError:
        return "another process"


class RunDir:
    """A probe run directory: created or checked (marker), then locked for one run.

    ``open`` refuses a non-empty folder without probe's marker and a directory another run
    holds; ``close`` releases the lock. Use as a context manager.
    """

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._lock = handle

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> RunDir:
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ProbeError(f"output {path} exists and is not a folder")
        if path.is_dir() and not is_run_dir(path) and any(path.iterdir()):
            raise ProbeError(
                f"output folder {path} is not empty and was not made by probe; "
                "choose a new --out (probe writes only into folders it created)"
            )
        if not create and not is_run_dir(path):
            raise ProbeError(f"{path} is not a probe run directory")
        try:
            (path / STATE).mkdir(parents=True, exist_ok=True)
            marker = path / MARKER
            if not marker.is_file():
                write_json(marker, {"created_by": "probe", "format": 1})
            handle = open(path / LOCK, "a+", encoding="utf-8")
        except OSError as exc:
            raise ProbeError(f"cannot create output folder {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(path / LOCK)
            handle.close()
            raise ProbeError(
                f"run directory {path} is in use by {holder}; wait for it or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"probe pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        return cls(path, handle)

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def clear(self) -> None:
        """Delete every file a run wrote here (a fresh start); other files stay."""
        for name in (*RECORD_FILES, *DERIVED_FILES):
            (self.path / name).unlink(missing_ok=True)
        figures = self.path / "figures"
        remove_own_figures(figures)
        (figures / Path(FIGURES_MANIFEST).name).unlink(missing_ok=True)
        for item in (self.path / STATE).iterdir():
            if item.name not in ("run.json", "lock"):
                shutil.rmtree(item) if item.is_dir() else item.unlink()


def is_locked(path: Path) -> bool:
    """Whether a live process holds ``path``'s run lock (a dead run's lock is free)."""
    lock = path / LOCK
    if not lock.is_file():
        return False
    with open(lock, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


# The status of a run whose summary says "running" while no process holds its lock: it was
# killed outright (SIGKILL, the OOM killer, a lost node) before it could record how it ended.
KILLED = "stale (killed)"


def run_status(path: Path, summary: dict) -> str | None:
    """The run's status as it stands: ``KILLED`` for a "running" run that nobody holds."""
    status = summary.get("status")
    if status == "running" and not is_locked(path):
        return KILLED
    return status if isinstance(status, str) else None


# ------------------------------------------------------------------ single-file outputs


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (existing or not)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(path: Path, inputs: Iterable[Path | str | None], what: str) -> None:
    """Refuse an output that is one of the inputs, or that sits in a folder that cannot exist."""
    for source in inputs:
        if source is not None and same_file(path, Path(source)):
            raise ProbeError(f"{what} {path} is also an input; choose another --out")
    if path.is_dir():
        raise ProbeError(f"{what} {path} is a folder; give a file name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ProbeError(f"cannot write {what} {path}: {parent} is not a writable folder")


def sidecar(path: Path) -> Path:
    """The state file of a stage command's output file (config + progress), beside it."""
    return path.with_name(f".{path.name}.probe.json")
