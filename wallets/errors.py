"""The exception root of the wallet package.

Every error the wallet raises on purpose derives from :class:`WalletError`. Each subclass
carries a stable machine-readable ``code`` (for ``--json`` output and for tests) and a
human ``detail`` that says what went wrong and, where it helps, what to do. The CLI maps
any :class:`WalletError` to a clear message and a non-zero exit status.
"""

from __future__ import annotations

from typing import Any, ClassVar

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

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context

    def diagnostics(self) -> dict[str, Any]:
        """A JSON-ready description of the error, for ``--json`` output and logs."""
        return {"code": self.code, "detail": self.detail, **self.context}


class WrongPassphrase(WalletError):
    """The passphrase does not open the keystore (its MAC does not match)."""

    code = "wrong-passphrase"


class CorruptKeystore(WalletError):
    """A keystore file is unreadable, not a scrypt Web3 Secret Storage v3 keystore, or holds
    a key for another address than the wallet expects."""

    code = "corrupt-keystore"


class CorruptWallet(WalletError):
    """The wallet index (``wallet.json``) is unreadable or inconsistent."""

    code = "corrupt-wallet"


class WalletNotFound(WalletError):
    """No wallet in the given directory."""

    code = "wallet-not-found"


class WalletExists(WalletError):
    """A wallet (or other files) already exist where a new wallet was to be created."""

    code = "wallet-exists"


class AccountNotFound(WalletError):
    """The wallet holds no account with that address."""

    code = "account-not-found"


class DuplicateAccount(WalletError):
    """The wallet already holds that account."""

    code = "duplicate-account"


class InvalidMnemonic(WalletError):
    """Not a valid English BIP-39 mnemonic (unknown word, wrong length or checksum)."""

    code = "invalid-mnemonic"


class InvalidPrivateKey(WalletError):
    """Not a valid secp256k1 private key (32 bytes, 0 < key < n)."""

    code = "invalid-private-key"


class WeakPassphrase(WalletError):
    """A new passphrase is too short."""

    code = "weak-passphrase"


class PassphraseRequired(WalletError):
    """No passphrase: the environment variable is unset and no prompt could be shown."""

    code = "passphrase-required"


class KeystoreWriteError(WalletError):
    """A keystore or the wallet index could not be written; nothing was replaced."""

    code = "keystore-write-failed"


class InvalidConsentRequest(WalletError):
    """A grant, revocation or nonce increase that the chain would refuse (expiry in the
    past, ``notBefore`` after expiry, no purposes, deadline passed, ...)."""

    code = "invalid-consent-request"


class TypedDataMismatch(WalletError):
    """The service's typed-data definitions differ from what the contracts verify."""

    code = "typed-data-mismatch"
