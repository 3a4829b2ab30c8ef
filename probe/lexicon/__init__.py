"""From word attributions to a ranked trigger lexicon.

``table`` holds the lexicon records and lexicon-vs-lexicon agreement, ``builder`` fits a
lexicon from attributions, ``cues`` mines a fine-tuning set's data-level cues, ``stats`` the
intervals and tests they share.
"""

from probe.lexicon.builder import LexiconBuilder
from probe.lexicon.table import LexiconEntry, TriggerLexicon

__all__ = ["LexiconBuilder", "LexiconEntry", "TriggerLexicon"]
