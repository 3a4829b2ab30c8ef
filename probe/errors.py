"""User-facing errors: anything raised as ``ProbeError`` is printed by the CLI as one line."""


class ProbeError(Exception):
    """Bad input or an unusable model/file; the message is shown to the user verbatim."""
