"""Shipped lexicon files (openings, judge keywords and classifier weights, data-cue lexicons).

Read with importlib.resources, through probe.resources.lexicon_path.
"""
