"""The exception root of the ledger package.

Every error the ledger raises on purpose derives from :class:`LedgerError`. Each subclass
carries a stable machine-readable ``code`` (used as the RFC 9457 problem ``type`` by the
API and as the finding name by the regulator's scripts) and a human ``detail``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LedgerError(Exception):
    """Root of every deliberate ledger error."""

    code: ClassVar[str] = "ledger-error"
    #: HTTP status the API maps this error to (4xx: the caller's fault).
    status: int = 400

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context

    def diagnostics(self) -> dict[str, Any]:
        """A JSON-ready description of the error, for logs, CLIs and problem documents."""
        return {"code": self.code, "detail": self.detail, **self.context}


class ProofError(LedgerError):
    """A Merkle inclusion or consistency proof does not verify, or is malformed."""

    code = "invalid-proof"
    status = 422


class SignatureError(LedgerError):
    """A signature is malformed, malleable (high s) or does not recover."""

    code = "invalid-signature"
    status = 422


class MalformedEventError(LedgerError):
    """An event, grant or struct value is malformed: bad hex, wrong length, out-of-range int."""

    code = "malformed-event"
    status = 422


class WeakKeyError(LedgerError):
    """A reference (HMAC) key is too short to keep local identifiers secret."""

    code = "weak-key"
    status = 400
