"""probe: audit safety-fine-tuned language models for single-word shortcut triggers.

The public API, imported on first use so that ``import probe`` (and the CLI's start) stays light::

    from probe import AuditConfig, run_audit, load_subject, LexiconBuilder, OneWordAttack
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "AuditConfig": "probe.pipeline",
    "load_subject": "probe.pipeline",
    "run_audit": "probe.audit",
    "Subject": "probe.subject.text",
    "MarginConfig": "probe.subject.margin",
    "Prompt": "probe.data",
    "Query": "probe.query",
    "load_prompts": "probe.data",
    "get_attributor": "probe.attribution",
    "WordAttribution": "probe.attribution",
    "LexiconBuilder": "probe.lexicon.builder",
    "TriggerLexicon": "probe.lexicon.table",
    "OneWordAttack": "probe.attack",
    "AttackResult": "probe.attack",
    "load_judge": "probe.judge",
    "load_run": "probe.report",
}

__all__ = [
    "AttackResult",
    "AuditConfig",
    "LexiconBuilder",
    "MarginConfig",
    "OneWordAttack",
    "Prompt",
    "Query",
    "Subject",
    "TriggerLexicon",
    "WordAttribution",
    "get_attributor",
    "load_judge",
    "load_prompts",
    "load_run",
    "load_subject",
    "run_audit",
]

if TYPE_CHECKING:
    from probe.attack import AttackResult, OneWordAttack
    from probe.attribution import WordAttribution, get_attributor
    from probe.audit import run_audit
    from probe.data import Prompt, load_prompts
    from probe.judge import load_judge
    from probe.lexicon.builder import LexiconBuilder
    from probe.lexicon.table import TriggerLexicon
    from probe.pipeline import AuditConfig, load_subject
    from probe.query import Query
    from probe.report import load_run
    from probe.subject.margin import MarginConfig
    from probe.subject.text import Subject


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'probe' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
