"""Keys at rest: Web3 Secret Storage v3 keystores (scrypt), written atomically, owner-only.

* **Format.** Account keys are encrypted by eth-account (``Account.encrypt(key,
  passphrase, kdf="scrypt")``, i.e. eth-keyfile): the keystore geth, MetaMask's import and
  every Ethereum library read. Other secrets (the wallet's BIP-39 entropy) use the same v3
  construction, built here with ``cryptography`` (scrypt → AES-128-CTR, MAC =
  keccak(dk[16:32] ‖ ciphertext)), without an ``address``; both are decrypted by
  eth-keyfile. Default work factor: scrypt N = 2**18, r = 8, p = 1 (geth's "standard").
* **Reading is strict.** A keystore must be a JSON object with ``version`` 3, the
  ``aes-128-ctr`` cipher and the ``scrypt`` KDF with sane parameters (at most
  :data:`MAX_SCRYPT_MEMORY` bytes of memory, so a crafted file cannot exhaust memory),
  hex fields of the right lengths; anything else is :class:`CorruptKeystore`. A MAC
  mismatch is :class:`WrongPassphrase` (it is also what a tampered ciphertext gives:
  the MAC cannot tell the two apart). A decrypted key must match the keystore's address.
* **Writing is atomic.** :func:`write_private_file` writes through
  :func:`ledger.fileio.atomic_write`: a temporary file in the same directory (0600), fsynced,
  moved into place (``link`` when the target must not exist, ``os.replace`` when it may be
  replaced), then the directory fsynced. A failure at any step removes the temporary file and
  leaves the previous file untouched: a keystore is never half-written, nor replaced by a
  failed write.
* **Permissions.** Directories 0700, files 0600. Reading a file or directory that group
  or others may access, or that another user owns, warns
  (:class:`InsecurePermissionsWarning`) but still reads.
* **Passphrases** come from ``MEDTRAIL_WALLET_PASSPHRASE`` or a hidden prompt (confirmed
  when new), never from a command-line argument. Passphrases are UTF-8 encoded, not
  normalised (as geth and eth-account do).
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from uuid import uuid4

import click
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from eth_account import Account
from eth_keyfile.exceptions import EthKeyfileValueError
from eth_keyfile.keyfile import decode_keyfile_json

from ledger import jsonsafe
from ledger.eip712 import SECP256K1_N, address_of, keccak, to_checksum_address
from ledger.fileio import atomic_write
from wallets.errors import (
    CorruptKeystore,
    InvalidPrivateKey,
    KeystoreWriteError,
    PassphraseRequired,
    WeakPassphrase,
    WrongPassphrase,
)

__all__ = [
    "DEFAULT_SCRYPT_N",
    "DIR_MODE",
    "FILE_MODE",
    "MAX_SCRYPT_MEMORY",
    "MIN_PASSPHRASE_LENGTH",
    "PASSPHRASE_ENV",
    "InsecurePermissionsWarning",
    "check_new_passphrase",
    "check_permissions",
    "decrypt_key",
    "decrypt_secret",
    "encrypt_key",
    "encrypt_secret",
    "ensure_private_dir",
    "load_keystore",
    "read_passphrase",
    "save_keystore",
    "validate_keystore",
    "write_private_file",
]

#: The environment variable a passphrase may come from (for scripts and tests).
PASSPHRASE_ENV: Final = "MEDTRAIL_WALLET_PASSPHRASE"  # noqa: S105 - a variable name
#: scrypt N for new keystores (geth's StandardScryptN); r = 8, p = 1.
DEFAULT_SCRYPT_N: Final = 1 << 18
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
#: Largest scrypt memory (128·N·r·p bytes) a keystore may ask for when read.
MAX_SCRYPT_MEMORY: Final = 1 << 30
#: Shortest passphrase accepted for a new wallet.
MIN_PASSPHRASE_LENGTH: Final = 8
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700

_HEX: Final = frozenset("0123456789abcdefABCDEF")


class InsecurePermissionsWarning(UserWarning):
    """A wallet file or directory is readable by others, or owned by another user."""


# --------------------------------------------------------------------------- passphrases


def check_new_passphrase(passphrase: str) -> None:
    """Refuse a passphrase too weak to protect a health-consent key."""
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise WeakPassphrase(
            f"the passphrase must have at least {MIN_PASSPHRASE_LENGTH} characters"
        )


def read_passphrase(
    *,
    new: bool = False,
    prompt: str = "Wallet passphrase",
    environ: Mapping[str, str] | None = None,
) -> str:
    """The wallet passphrase: from ``MEDTRAIL_WALLET_PASSPHRASE`` when set and not empty,
    else from a hidden prompt (asked twice when ``new``, and asked again when the two
    differ). A ``new`` passphrase is checked by :func:`check_new_passphrase` as soon as it
    is given (a weak one is refused before the confirmation is asked for). Raises
    :class:`PassphraseRequired` when no prompt can be answered (end of input, Ctrl-C).
    """
    env = os.environ if environ is None else environ
    passphrase = env.get(PASSPHRASE_ENV, "")
    if passphrase:
        if new:
            check_new_passphrase(passphrase)
        return passphrase
    while True:
        passphrase = _prompt(prompt)
        if not new:
            return passphrase
        check_new_passphrase(passphrase)  # refused before it is asked a second time
        if _prompt("Repeat for confirmation") == passphrase:
            return passphrase
        click.echo("Error: The two entered values do not match.")


def _prompt(text: str) -> str:
    """A hidden prompt; :class:`PassphraseRequired` when it cannot be answered."""
    try:
        answer: str = click.prompt(text, hide_input=True, show_default=False, type=str)
    except click.Abort:
        raise PassphraseRequired(
            f"no passphrase: set {PASSPHRASE_ENV} or run in a terminal to be prompted"
        ) from None
    return answer


# --------------------------------------------------------------------------- encryption


def _private_key_bytes(private_key: bytes | str) -> bytes:
    if isinstance(private_key, str):
        text = private_key.strip()
        text = text[2:] if text[:2] in ("0x", "0X") else text
        if len(text) != 64 or not _HEX.issuperset(text):
            raise InvalidPrivateKey("a private key is 32 bytes: 64 hex digits, 0x optional")
        private_key = bytes.fromhex(text)
    if not isinstance(private_key, bytes | bytearray) or len(private_key) != 32:
        raise InvalidPrivateKey("a private key is 32 bytes")
    if not 0 < int.from_bytes(private_key, "big") < SECP256K1_N:
        raise InvalidPrivateKey("a private key must be in 1 .. n-1 of secp256k1")
    return bytes(private_key)


def _check_scrypt_n(scrypt_n: int) -> None:
    if scrypt_n < 2 or scrypt_n & (scrypt_n - 1) or 128 * scrypt_n * SCRYPT_R > MAX_SCRYPT_MEMORY:
        raise ValueError(f"scrypt N must be a power of two in 2 .. 2**20, got {scrypt_n}")


def encrypt_key(
    private_key: bytes | str, passphrase: str, *, scrypt_n: int = DEFAULT_SCRYPT_N
) -> dict[str, Any]:
    """A v3 keystore (scrypt) of an account key, by eth-account. The key may be 0x-hex."""
    key = _private_key_bytes(private_key)
    _check_scrypt_n(scrypt_n)
    document = Account.encrypt(key, passphrase, kdf="scrypt", iterations=scrypt_n)
    document["address"] = str(document["address"]).lower()  # as geth writes it
    return document


def encrypt_secret(
    secret: bytes, passphrase: str, *, scrypt_n: int = DEFAULT_SCRYPT_N
) -> dict[str, Any]:
    """A v3 keystore (scrypt) of an arbitrary secret (no ``address``), e.g. BIP-39 entropy."""
    if not isinstance(secret, bytes) or not secret:
        raise ValueError("the secret must be non-empty bytes")
    _check_scrypt_n(scrypt_n)
    salt = os.urandom(32)
    iv = os.urandom(16)
    derived = Scrypt(salt=salt, length=32, n=scrypt_n, r=SCRYPT_R, p=SCRYPT_P).derive(
        passphrase.encode("utf-8")
    )
    encryptor = Cipher(algorithms.AES(derived[:16]), modes.CTR(iv)).encryptor()
    ciphertext = encryptor.update(secret) + encryptor.finalize()
    return {
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": {"iv": iv.hex()},
            "ciphertext": ciphertext.hex(),
            "kdf": "scrypt",
            "kdfparams": {
                "dklen": 32,
                "n": scrypt_n,
                "r": SCRYPT_R,
                "p": SCRYPT_P,
                "salt": salt.hex(),
            },
            "mac": keccak(derived[16:32] + ciphertext).hex(),
        },
        "id": str(uuid4()),
        "version": 3,
    }


def _hex_field(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or len(value) % 2 or not _HEX.issuperset(value):
        raise CorruptKeystore(f"keystore {what} must be hex")
    raw = bytes.fromhex(value)
    if size is not None and len(raw) != size:
        raise CorruptKeystore(f"keystore {what} must be {size} bytes, got {len(raw)}")
    return raw


def _positive_int(value: Any, what: str) -> int:
    if type(value) is not int or value < 1:
        raise CorruptKeystore(f"keystore scrypt {what} must be a positive int")
    return value


def validate_keystore(document: Any, *, key: bool = True) -> dict[str, Any]:
    """Check that ``document`` is a scrypt v3 keystore; return its keys lower-cased.

    With ``key`` (an account keystore) the ciphertext must be 32 bytes and ``address``
    present. Raises :class:`CorruptKeystore` with what is wrong.
    """
    if not isinstance(document, dict):
        raise CorruptKeystore("a keystore must be a JSON object")
    doc = {str(k).lower(): v for k, v in document.items()}  # geth wrote "Crypto" once
    if doc.get("version") != 3 or type(doc.get("version")) is not int:
        raise CorruptKeystore(
            f"not a Web3 Secret Storage v3 keystore (version {doc.get('version')!r})"
        )
    crypto = doc.get("crypto")
    if not isinstance(crypto, dict):
        raise CorruptKeystore("keystore has no 'crypto' object")
    if crypto.get("cipher") != "aes-128-ctr":
        raise CorruptKeystore(f"unsupported keystore cipher {crypto.get('cipher')!r}")
    if crypto.get("kdf") != "scrypt":
        raise CorruptKeystore(f"not a scrypt keystore (kdf {crypto.get('kdf')!r})")
    params = crypto.get("kdfparams")
    cipherparams = crypto.get("cipherparams")
    if not isinstance(params, dict) or not isinstance(cipherparams, dict):
        raise CorruptKeystore("keystore has no 'kdfparams' or 'cipherparams' object")
    n = _positive_int(params.get("n"), "n")
    r = _positive_int(params.get("r"), "r")
    p = _positive_int(params.get("p"), "p")
    if n < 2 or n & (n - 1):
        raise CorruptKeystore("keystore scrypt n must be a power of two")
    if 128 * n * r * p > MAX_SCRYPT_MEMORY or p > 16:
        raise CorruptKeystore("keystore scrypt parameters ask for too much work or memory")
    if params.get("dklen") != 32:
        raise CorruptKeystore("keystore scrypt dklen must be 32")
    _hex_field(params.get("salt"), "salt")
    _hex_field(cipherparams.get("iv"), "iv", 16)
    ciphertext = _hex_field(crypto.get("ciphertext"), "ciphertext")
    if not ciphertext:
        raise CorruptKeystore("keystore ciphertext is empty")
    _hex_field(crypto.get("mac"), "mac", 32)
    if key:
        if len(ciphertext) != 32:
            raise CorruptKeystore("an account keystore's ciphertext must be 32 bytes")
        _hex_field(doc.get("address"), "address", 20)
    return doc


def decrypt_secret(document: Any, passphrase: str, *, key: bool = False) -> bytes:
    """The plaintext of a v3 keystore; :class:`WrongPassphrase` if the MAC does not match."""
    doc = validate_keystore(document, key=key)
    try:
        return bytes(decode_keyfile_json(doc, passphrase.encode("utf-8")))
    except EthKeyfileValueError as exc:
        if "MAC mismatch" in str(exc):
            raise WrongPassphrase("wrong passphrase (or the keystore was altered)") from None
        raise CorruptKeystore(f"unreadable keystore: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptKeystore(f"unreadable keystore: {exc}") from None


def decrypt_key(document: Any, passphrase: str, *, expected_address: str | None = None) -> bytes:
    """The private key of an account keystore, checked against its address (and
    ``expected_address`` when given): a mismatch is :class:`CorruptKeystore`."""
    doc = validate_keystore(document, key=True)
    stored = to_checksum_address("0x" + str(doc["address"]).lower())
    if expected_address is not None and stored != to_checksum_address(expected_address):
        raise CorruptKeystore(
            f"the keystore is for {stored}, not {to_checksum_address(expected_address)}",
            address=stored,
        )
    key = decrypt_secret(doc, passphrase, key=True)
    try:
        actual = address_of(key)
    except ValueError:
        raise CorruptKeystore("the keystore does not hold a valid secp256k1 key") from None
    if actual != stored:
        raise CorruptKeystore(
            f"the keystore says {stored} but holds the key of {actual}", address=stored
        )
    return key


# --------------------------------------------------------------------------- files


def check_permissions(path: Path) -> None:
    """Warn when ``path`` is accessible to group or others, or owned by another user."""
    try:
        info = path.stat()
    except OSError:
        return
    loose = stat.S_IMODE(info.st_mode) & 0o077
    if loose:
        warnings.warn(
            f"{path} is accessible to other users (mode {stat.S_IMODE(info.st_mode):04o});"
            f" run: chmod {'700' if path.is_dir() else '600'} {path}",
            InsecurePermissionsWarning,
            stacklevel=3,
        )
    getuid = getattr(os, "getuid", None)
    if getuid is not None and info.st_uid != getuid():
        warnings.warn(
            f"{path} is owned by another user (uid {info.st_uid})",
            InsecurePermissionsWarning,
            stacklevel=3,
        )


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) if needed; the directory itself gets 0700.

    An existing directory is left as it is (it may be a shared parent such as ``/tmp``);
    :func:`check_permissions` warns when a wallet's own directory is too open.
    """
    if path.is_dir():
        return
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        path.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
    except OSError as exc:
        raise KeystoreWriteError(f"cannot create the directory {path}: {exc}") from exc


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Atomically and durably write ``data`` to ``path`` with mode 0600
    (:func:`ledger.fileio.atomic_write`: temporary file, fsync, ``os.link`` when ``overwrite``
    is False — refusing an existing file — or ``os.replace``, fsync of the directory).

    On any failure the temporary file is removed, the previous content of ``path`` is
    untouched, and :class:`KeystoreWriteError` is raised.
    """
    ensure_private_dir(path.parent)
    try:
        atomic_write(path, data, mode=FILE_MODE, overwrite=overwrite)
    except FileExistsError as exc:
        raise KeystoreWriteError(f"{path} exists already; not replaced") from exc
    except OSError as exc:
        raise KeystoreWriteError(f"cannot write {path}: {exc}") from exc


def save_keystore(path: Path, document: Mapping[str, Any], *, overwrite: bool = False) -> None:
    """Write a keystore atomically, 0600 (see :func:`write_private_file`)."""
    data = json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    write_private_file(path, data, overwrite=overwrite)


def load_keystore(path: Path, *, key: bool = True) -> dict[str, Any]:
    """Read and validate a keystore file (warning about loose permissions)."""
    check_permissions(path.parent)
    check_permissions(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CorruptKeystore(f"the keystore {path} is missing", path=str(path)) from None
    except OSError as exc:
        raise CorruptKeystore(f"cannot read the keystore {path}: {exc}", path=str(path)) from exc
    try:
        document = jsonsafe.loads(raw)
    except ValueError as exc:
        raise CorruptKeystore(f"{path} is not JSON: {exc}", path=str(path)) from None
    try:
        return validate_keystore(document, key=key)
    except CorruptKeystore as exc:
        raise CorruptKeystore(f"{path}: {exc.detail}", path=str(path)) from None
