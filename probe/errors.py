"""User-facing errors: anything raised as ``ProbeError`` is printed by the CLI as one line."""

import codecs
from pathlib import Path


class ProbeError(Exception):
    """Bad input or an unusable model/file; the message is shown to the user verbatim."""


def decode_text(data: bytes, path: Path) -> str:
    """``data`` (the bytes of ``path``) as UTF-8 text, a leading BOM dropped; a decoding error
    is a one-line ``ProbeError`` naming the file and the byte."""
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = exc.start + bom
        raise ProbeError(f"{path} is not UTF-8 text ({exc.reason} at byte {at})") from None


def read_bytes(path: Path) -> bytes:
    """A file's bytes; an unreadable file (missing, a folder, no permission) is a one-line
    ``ProbeError``."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_text(path: Path) -> str:
    """A file's UTF-8 text (a leading BOM tolerated); an unreadable or undecodable file is a
    one-line ``ProbeError``, so every reader of user or run files fails the same way."""
    return decode_text(read_bytes(path), path)
