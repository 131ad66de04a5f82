"""The exception root of the wallet package.

Every error the wallet raises on purpose derives from :class:`WalletError`. Each subclass
carries a stable machine-readable ``code`` (for ``--json`` output and for tests; what it means:
:data:`ledger.codes.CODES`, where a subclass takes its docstring from) and a human ``detail``
that says what went wrong and, where it helps, what to do. The CLI maps any
:class:`WalletError` to a clear message and a non-zero exit status.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ledger.codes import CODES

__all__ = [
    "AccountNotFound",
    "CorruptKeystore",
    "CorruptWallet",
    "DuplicateAccount",
    "InvalidConsentRequest",
    "InvalidMnemonic",
    "InvalidPrivateKey",
    "KeystoreWriteError",
    "PassphraseRequired",
    "TypedDataMismatch",
    "WalletError",
    "WalletExists",
    "WalletNotFound",
    "WeakPassphrase",
    "WrongPassphrase",
]


class WalletError(Exception):
    """Root of every deliberate wallet error."""

    code: ClassVar[str] = "wallet-error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        entry = CODES.get(cls.code)
        if entry is not None and cls.__doc__ is None:
            cls.__doc__ = entry.description

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context

    def diagnostics(self) -> dict[str, Any]:
        """A JSON-ready description of the error, for ``--json`` output and logs."""
        return {"code": self.code, "detail": self.detail, **self.context}


class WrongPassphrase(WalletError):
    code = "wrong-passphrase"


class CorruptKeystore(WalletError):
    code = "corrupt-keystore"


class CorruptWallet(WalletError):
    code = "corrupt-wallet"


class WalletNotFound(WalletError):
    code = "wallet-not-found"


class WalletExists(WalletError):
    code = "wallet-exists"


class AccountNotFound(WalletError):
    code = "account-not-found"


class DuplicateAccount(WalletError):
    code = "duplicate-account"


class InvalidMnemonic(WalletError):
    code = "invalid-mnemonic"


class InvalidPrivateKey(WalletError):
    code = "invalid-private-key"


class WeakPassphrase(WalletError):
    code = "weak-passphrase"


class PassphraseRequired(WalletError):
    code = "passphrase-required"


class KeystoreWriteError(WalletError):
    code = "keystore-write-failed"


class InvalidConsentRequest(WalletError):
    code = "invalid-consent-request"


class TypedDataMismatch(WalletError):
    code = "typed-data-mismatch"
