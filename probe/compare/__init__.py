"""Compare checkpoints: did a fine-tune create a shortcut trigger, and did a fix remove it?

``probe compare RUN_A RUN_B ...`` reads run directories of the same prompts on different models
and writes a comparison directory: per-trigger paired effect differences with bootstrap
intervals, lexicon agreement, refusal / one-word ASR / over-refusal per run with paired McNemar
tests, and *edit replay* (run A's verified one-word edits re-scored and re-generated on model B).
"""

from importlib import import_module

_EXPORTS = {
    "Comparison": "probe.compare.compare",
    "compare_runs": "probe.compare.compare",
    "write_comparison": "probe.compare.output",
    "ReplayResult": "probe.compare.replay",
    "replay_edits": "probe.compare.replay",
    "ComparedRun": "probe.compare.runs",
    "load_run": "probe.compare.runs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import on first use, so ``probe.cli`` can register the commands without loading torch."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'probe.compare' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
