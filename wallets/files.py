"""The wallet's small JSON documents beside its keystores (``index-heads.json``,
``grants-v2.json``): ``{"format": 1, SECTION: {...}}``, read strictly and written atomically
with owner-only permissions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from ledger.fileio import atomic_write
from wallets.errors import CorruptWallet, KeystoreWriteError

__all__ = ["read_section", "write_section"]

_FORMAT: Final = 1


def read_section(path: Path | None, section: str, remedy: str) -> dict[str, Any]:
    """The object ``section`` of the document at ``path`` (empty when there is none);
    :class:`CorruptWallet` naming ``remedy`` when it is unreadable."""
    if path is None or not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise ValueError("not a format-1 document")
        found = document[section]
        if not isinstance(found, dict):
            raise ValueError(f"{section} is not an object")
        return found
    except (OSError, UnicodeDecodeError, ValueError, KeyError) as exc:
        raise CorruptWallet(f"{path} is unreadable ({exc}): {remedy}", path=str(path)) from None


def write_section(
    path: Path, section: str, entries: dict[str, Any], *, sort_keys: bool = True
) -> None:
    """Replace the document at ``path`` with ``entries`` as its ``section``, atomically
    (``sort_keys`` False: in the order of ``entries``)."""
    document = {"format": _FORMAT, section: entries}
    text = json.dumps(document, indent=2, sort_keys=sort_keys) + "\n"
    try:
        atomic_write(path, text, mode=0o600)
    except OSError as exc:
        raise KeystoreWriteError(f"cannot write {path}: {exc}", path=str(path)) from None
