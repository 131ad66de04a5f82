"""Free text that medtrail stores, shows or sends on chain: one line of printable characters.

Names and labels reach the SQL store (PostgreSQL refuses NUL in text: a 500 if it got that
far), the chain (an institution's name, forever), terminals and the supervision console. So
text is refused, never cleaned, when it holds:

* control characters (Unicode ``Cc``: NUL, tab, line breaks, escape sequences, DEL, C1);
* line and paragraph separators (U+2028, U+2029);
* bidirectional embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069), which make
  a name display as another ("Trojan Source");
* surrogates (U+D800 to U+DFFF): a JSON ``\\ud800`` escape decodes to one, and no store can
  encode it.

Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Final

from ledger.errors import LedgerError

__all__ = ["UnsafeText", "check_text", "unsafe_character"]

_UNSAFE: Final = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


class UnsafeText(LedgerError):
    code = "invalid-text"


def unsafe_character(value: str) -> str | None:
    """The first character of ``value`` that text may not hold, as ``U+XXXX``; else None."""
    found = _UNSAFE.search(value)
    return None if found is None else f"U+{ord(found.group()):04X}"


def check_text(value: str, field: str) -> str:
    """``value``, or :class:`UnsafeText` naming ``field`` and the first character refused."""
    character = unsafe_character(value)
    if character is not None:
        raise UnsafeText(
            f"{field} must be one line of printable text (it holds {character})",
            field=field,
            character=character,
        )
    return value
