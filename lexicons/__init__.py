"""Shipped lexicon files (openings, judge keywords, data-cue lexicons), read with importlib.resources."""
