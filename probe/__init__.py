"""probe: audit safety-fine-tuned language models for single-word shortcut triggers."""

__version__ = "0.1.0"
