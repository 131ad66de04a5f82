"""The exception root of the ledger package.

Every error the ledger raises on purpose derives from :class:`LedgerError`. Each subclass
carries a stable machine-readable ``code`` (used as the RFC 9457 problem ``type`` by the
API and as the finding name by the regulator's scripts) and a human ``detail``. What a code
means and the HTTP status it is answered with are in one table, :data:`ledger.codes.CODES`:
a subclass takes its ``status`` and its docstring from there.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ledger.codes import CODES


def _from_table(cls: type[Any]) -> None:
    """Give an error class its code's HTTP status and description (:mod:`ledger.codes`),
    unless it sets them itself (a code missing from the table fails the code-table tests)."""
    entry = CODES.get(cls.code)
    if entry is None:
        return
    if "status" not in cls.__dict__ and entry.status is not None:
        cls.status = entry.status
    if cls.__doc__ is None:
        cls.__doc__ = entry.description


class LedgerError(Exception):
    code: ClassVar[str] = "ledger-error"
    #: HTTP status the API maps this error to (4xx: the caller's fault), from the code table.
    status: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _from_table(cls)

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context

    def diagnostics(self) -> dict[str, Any]:
        """A JSON-ready description of the error, for logs, CLIs and problem documents."""
        return {"code": self.code, "detail": self.detail, **self.context}


_from_table(LedgerError)


class ProofError(LedgerError):
    code = "invalid-proof"


class SignatureError(LedgerError):
    code = "invalid-signature"


class MalformedEventError(LedgerError):
    code = "malformed-event"


class WeakKeyError(LedgerError):
    code = "weak-key"
