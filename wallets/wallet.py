"""A patient's wallet: several accounts in one directory, keys only in keystores.

Layout of a wallet directory (0700; every file 0600)::

    wallet.json                          the index: addresses and derivation, no secrets
    seed.json                            the BIP-39 entropy, in a scrypt v3 keystore
    keystore/UTC--<time>--<address>      one geth-style v3 keystore per account
    .lock                                serialises changes between processes

Decisions:

* **The mnemonic is stored, encrypted.** ``seed.json`` holds the mnemonic's entropy in a
  Web3 Secret Storage v3 keystore (scrypt, the same passphrase as the accounts), so that
  :meth:`Wallet.add_account` derives the next BIP-44 account without asking for the
  words again. The words themselves are shown once, at creation, and never again (no API
  reveals them); a patient who loses them can still use the wallet but cannot recover it
  elsewhere. Every account also has its own keystore, so using an account decrypts just
  that account's key (and the keystores can be copied into geth or MetaMask).
* **One passphrase per wallet.** Adding a key or an account first proves the passphrase
  on an existing secret, so a wallet never mixes passphrases.
* **Crash safety.** A new wallet is built in a temporary sibling directory and renamed
  into place: it appears complete or not at all. Later changes write the new keystore
  first (never replacing a file) and then the index (atomically): the index is the
  commit point, and a crash in between leaves only an unlisted keystore behind.
* **Accounts** come from the mnemonic (``source`` "mnemonic", BIP-44 ``index`` and
  ``path``) or from an imported private key (``source`` "private-key").
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger import jsonsafe
from ledger.eip712 import address_of, to_checksum_address
from ledger.errors import LedgerError
from ledger.fileio import fsync_dir
from wallets.errors import (
    AccountNotFound,
    CorruptWallet,
    DuplicateAccount,
    KeystoreWriteError,
    WalletError,
    WalletExists,
    WalletNotFound,
)
from wallets.keystore import (
    DEFAULT_SCRYPT_N,
    DIR_MODE,
    check_new_passphrase,
    check_permissions,
    decrypt_key,
    decrypt_secret,
    encrypt_key,
    encrypt_secret,
    ensure_private_dir,
    load_keystore,
    save_keystore,
    write_private_file,
)
from wallets.keystore import _private_key_bytes as parse_private_key
from wallets.mnemonic import (
    DEFAULT_WORD_COUNT,
    PATH_TEMPLATE,
    derivation_path,
    derive_private_key,
    entropy_to_mnemonic,
    generate_mnemonic,
    mnemonic_to_entropy,
    normalize_mnemonic,
)

if TYPE_CHECKING:
    from ledger.chain.model import DeploymentSpec
    from wallets.service import PatientSession

_fcntl: ModuleType | None
try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    _fcntl = None

__all__ = [
    "INDEX_FILE",
    "KEYSTORE_DIR",
    "SEED_FILE",
    "WALLET_DIR_ENV",
    "AccountSource",
    "SeedInfo",
    "Wallet",
    "WalletAccount",
    "default_wallet_dir",
]

INDEX_FILE: Final = "wallet.json"
SEED_FILE: Final = "seed.json"
KEYSTORE_DIR: Final = "keystore"
LOCK_FILE: Final = ".lock"
WALLET_FORMAT: Final = "medtrail-wallet"
WALLET_VERSION: Final = 1
#: Where the wallet lives unless told otherwise (default ``~/.medtrail/wallet``).
WALLET_DIR_ENV: Final = "MEDTRAIL_WALLET_DIR"

_KEYSTORE_NAME_RE: Final = re.compile(
    r"keystore/UTC--\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{9}Z--(?P<address>[0-9a-f]{40})",
    re.ASCII,
)


def default_wallet_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$MEDTRAIL_WALLET_DIR``, else ``~/.medtrail/wallet``."""
    env = os.environ if environ is None else environ
    configured = env.get(WALLET_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".medtrail" / "wallet"


class AccountSource(StrEnum):
    """Where an account's key came from."""

    MNEMONIC = "mnemonic"
    PRIVATE_KEY = "private-key"


def _utc_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_utc(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise CorruptWallet(f"{what} must be a timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CorruptWallet(f"{what} is not a timestamp: {value!r}") from None
    if parsed.utcoffset() is None:
        raise CorruptWallet(f"{what} has no time zone")
    return parsed


@dataclass(frozen=True)
class WalletAccount:
    """One account of a wallet, as the index lists it (no secrets)."""

    address: str
    source: AccountSource
    #: The keystore's path relative to the wallet directory.
    keystore: str
    created_at: datetime
    #: BIP-44 address index (mnemonic accounts only).
    index: int | None = None
    #: Derivation path, ``m/44'/60'/0'/0/{index}`` (mnemonic accounts only).
    path: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The index entry (also what ``medtrail wallet list --json`` prints)."""
        return {
            "address": self.address,
            "source": self.source.value,
            "index": self.index,
            "path": self.path,
            "keystore": self.keystore,
            "created_at": _utc_text(self.created_at),
        }

    @classmethod
    def from_json(cls, data: Any) -> WalletAccount:
        """Parse and check an index entry; :class:`CorruptWallet` if anything is off."""
        if not isinstance(data, dict):
            raise CorruptWallet("an account entry must be an object")
        expected = {"address", "source", "index", "path", "keystore", "created_at"}
        if set(data) != expected:
            raise CorruptWallet(f"an account entry must have exactly {sorted(expected)}")
        address = data["address"]
        if not isinstance(address, str) or not _is_checksummed(address):
            raise CorruptWallet(f"invalid account address {address!r}")
        try:
            source = AccountSource(data["source"])
        except ValueError:
            raise CorruptWallet(f"unknown account source {data['source']!r}") from None
        keystore = data["keystore"]
        m = _KEYSTORE_NAME_RE.fullmatch(keystore) if isinstance(keystore, str) else None
        if m is None or m["address"] != address[2:].lower():
            raise CorruptWallet(f"invalid keystore path {keystore!r} for {address}")
        index, path = data["index"], data["path"]
        if source is AccountSource.MNEMONIC:
            if type(index) is not int or not 0 <= index < 1 << 31:
                raise CorruptWallet(f"invalid derivation index {index!r} for {address}")
            if path != derivation_path(index):
                raise CorruptWallet(f"invalid derivation path {path!r} for {address}")
        elif index is not None or path is not None:
            raise CorruptWallet(f"an imported key has no derivation path ({address})")
        return cls(
            address=address,
            source=source,
            keystore=keystore,
            created_at=_parse_utc(data["created_at"], "created_at"),
            index=index,
            path=path,
        )


@dataclass(frozen=True)
class SeedInfo:
    """The wallet's mnemonic, as the index describes it (the words are in ``seed.json``)."""

    words: int
    next_index: int
    path_template: str = PATH_TEMPLATE

    def as_json(self) -> dict[str, Any]:
        return {
            "file": SEED_FILE,
            "words": self.words,
            "path_template": self.path_template,
            "next_index": self.next_index,
        }

    @classmethod
    def from_json(cls, data: Any) -> SeedInfo:
        if not isinstance(data, dict) or set(data) != {
            "file",
            "words",
            "path_template",
            "next_index",
        }:
            raise CorruptWallet("invalid 'seed' entry in the wallet index")
        if data["file"] != SEED_FILE or data["path_template"] != PATH_TEMPLATE:
            raise CorruptWallet("unsupported seed file or derivation path template")
        if data["words"] not in (12, 15, 18, 21, 24) or type(data["words"]) is not int:
            raise CorruptWallet("invalid mnemonic word count in the wallet index")
        if type(data["next_index"]) is not int or not 0 <= data["next_index"] < 1 << 31:
            raise CorruptWallet("invalid next derivation index in the wallet index")
        return cls(words=data["words"], next_index=data["next_index"])


@dataclass(frozen=True)
class _Index:
    created_at: datetime
    seed: SeedInfo | None
    accounts: tuple[WalletAccount, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "format": WALLET_FORMAT,
            "version": WALLET_VERSION,
            "created_at": _utc_text(self.created_at),
            "seed": None if self.seed is None else self.seed.as_json(),
            "accounts": [a.as_json() for a in self.accounts],
        }

    @classmethod
    def from_json(cls, data: Any) -> _Index:
        if not isinstance(data, dict) or data.get("format") != WALLET_FORMAT:
            raise CorruptWallet(f"{INDEX_FILE} is not a medtrail wallet index")
        if data.get("version") != WALLET_VERSION:
            raise CorruptWallet(f"unsupported wallet version {data.get('version')!r}")
        if set(data) != {"format", "version", "created_at", "seed", "accounts"}:
            raise CorruptWallet(f"unexpected fields in {INDEX_FILE}")
        seed = None if data["seed"] is None else SeedInfo.from_json(data["seed"])
        if not isinstance(data["accounts"], list) or not data["accounts"]:
            raise CorruptWallet(f"{INDEX_FILE} lists no accounts")
        accounts = tuple(WalletAccount.from_json(a) for a in data["accounts"])
        addresses = [a.address for a in accounts]
        if len(set(addresses)) != len(addresses):
            raise CorruptWallet(f"{INDEX_FILE} lists an account twice")
        if any(a.source is AccountSource.MNEMONIC for a in accounts) and seed is None:
            raise CorruptWallet(f"{INDEX_FILE} lists mnemonic accounts but no seed")
        if seed is not None and any(
            a.index is not None and a.index >= seed.next_index for a in accounts
        ):
            raise CorruptWallet(f"{INDEX_FILE}: an account index is beyond next_index")
        return cls(_parse_utc(data["created_at"], "created_at"), seed, accounts)


def _is_checksummed(address: str) -> bool:
    try:
        return to_checksum_address(address) == address
    except LedgerError:
        return False


def _now() -> datetime:
    return datetime.now(UTC)


def _keystore_name(address: str, when: datetime) -> str:
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%S") + f".{when.microsecond:06d}000Z"
    return f"{KEYSTORE_DIR}/UTC--{stamp}--{address[2:].lower()}"


def _read_index(directory: Path) -> _Index:
    path = directory / INDEX_FILE
    if not path.is_file():
        raise WalletNotFound(
            f"no wallet in {directory} (create one with 'medtrail wallet create')",
            directory=str(directory),
        )
    check_permissions(directory)
    check_permissions(path)
    try:
        data = jsonsafe.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CorruptWallet(f"cannot read {path}: {exc}", path=str(path)) from None
    return _Index.from_json(data)


def _write_index(directory: Path, index: _Index) -> None:
    data = json.dumps(index.as_json(), indent=2).encode("utf-8") + b"\n"
    write_private_file(directory / INDEX_FILE, data, overwrite=True)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on the wallet (POSIX; a no-op elsewhere)."""
    if _fcntl is None:  # pragma: no cover
        yield
        return
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise KeystoreWriteError(f"cannot lock the wallet in {directory}: {exc}") from exc
    try:
        _fcntl.flock(fd, _fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Wallet:
    """A wallet directory. Get one with :meth:`create`, :meth:`import_mnemonic`,
    :meth:`import_key` or :meth:`open`; it holds no secret in memory.

    ``scrypt_n`` is the scrypt work factor for keystores this object writes (lower it only
    in tests); reading uses each keystore's own parameters.
    """

    def __init__(self, directory: Path, index: _Index, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
        self._directory = directory
        self._index = index
        self._scrypt_n = scrypt_n

    def __repr__(self) -> str:
        return f"Wallet({str(self._directory)!r}, accounts={len(self._index.accounts)})"

    # -- opening and creating ----------------------------------------------------------

    @staticmethod
    def exists(directory: Path | str) -> bool:
        """Whether ``directory`` holds a wallet index."""
        return (Path(directory) / INDEX_FILE).is_file()

    @classmethod
    def open(cls, directory: Path | str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> Wallet:
        """Open an existing wallet (:class:`WalletNotFound`, :class:`CorruptWallet`)."""
        path = Path(directory)
        return cls(path, _read_index(path), scrypt_n=scrypt_n)

    @classmethod
    def create(
        cls,
        directory: Path | str,
        passphrase: str,
        *,
        words: int = DEFAULT_WORD_COUNT,
        accounts: int = 1,
        scrypt_n: int = DEFAULT_SCRYPT_N,
    ) -> tuple[Wallet, str]:
        """A new wallet with a new mnemonic and ``accounts`` derived accounts.

        Returns the wallet and the mnemonic: show it to the patient once, with
        :data:`wallets.mnemonic.MNEMONIC_WARNING`, and do not keep it.
        """
        check_new_passphrase(passphrase)
        mnemonic = generate_mnemonic(words)
        wallet = cls._create_from_mnemonic(
            Path(directory), mnemonic, passphrase, accounts, scrypt_n
        )
        return wallet, mnemonic

    @classmethod
    def import_mnemonic(
        cls,
        directory: Path | str,
        mnemonic: str,
        passphrase: str,
        *,
        accounts: int = 1,
        scrypt_n: int = DEFAULT_SCRYPT_N,
    ) -> Wallet:
        """A new wallet from an existing mnemonic (e.g. restored from paper or MetaMask)."""
        canonical = normalize_mnemonic(mnemonic)
        check_new_passphrase(passphrase)
        return cls._create_from_mnemonic(Path(directory), canonical, passphrase, accounts, scrypt_n)

    @classmethod
    def import_key(
        cls,
        directory: Path | str,
        private_key: bytes | str,
        passphrase: str,
        *,
        scrypt_n: int = DEFAULT_SCRYPT_N,
    ) -> Wallet:
        """Import a private key (32 bytes or hex): into the wallet at ``directory`` when
        there is one (``passphrase`` must be the wallet's), else into a new wallet."""
        key = parse_private_key(private_key)
        path = Path(directory)
        if cls.exists(path):
            wallet = cls.open(path, scrypt_n=scrypt_n)
            wallet.add_key(key, passphrase)
            return wallet
        check_new_passphrase(passphrase)
        now = _now()
        address = address_of(key)

        def build(staging: Path) -> _Index:
            entry = WalletAccount(
                address, AccountSource.PRIVATE_KEY, _keystore_name(address, now), now
            )
            save_keystore(staging / entry.keystore, encrypt_key(key, passphrase, scrypt_n=scrypt_n))
            return _Index(now, None, (entry,))

        return cls(path, _build_new_wallet(path, build), scrypt_n=scrypt_n)

    @classmethod
    def _create_from_mnemonic(
        cls, directory: Path, mnemonic: str, passphrase: str, accounts: int, scrypt_n: int
    ) -> Wallet:
        if type(accounts) is not int or not 1 <= accounts <= 100:
            raise ValueError("create between 1 and 100 accounts")
        entropy = mnemonic_to_entropy(mnemonic)
        words = len(mnemonic.split())
        now = _now()

        def build(staging: Path) -> _Index:
            save_keystore(
                staging / SEED_FILE, encrypt_secret(entropy, passphrase, scrypt_n=scrypt_n)
            )
            entries = []
            for i in range(accounts):
                key = derive_private_key(mnemonic, i)
                address = address_of(key)
                entry = WalletAccount(
                    address,
                    AccountSource.MNEMONIC,
                    _keystore_name(address, now),
                    now,
                    index=i,
                    path=derivation_path(i),
                )
                save_keystore(
                    staging / entry.keystore, encrypt_key(key, passphrase, scrypt_n=scrypt_n)
                )
                entries.append(entry)
            return _Index(now, SeedInfo(words=words, next_index=accounts), tuple(entries))

        return cls(directory, _build_new_wallet(directory, build), scrypt_n=scrypt_n)

    # -- reading -----------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def has_mnemonic(self) -> bool:
        """Whether the wallet has a mnemonic to derive more accounts from."""
        return self._index.seed is not None

    @property
    def created_at(self) -> datetime:
        return self._index.created_at

    def accounts(self) -> tuple[WalletAccount, ...]:
        """The accounts, in the order they were added."""
        return self._index.accounts

    def addresses(self) -> tuple[str, ...]:
        """The accounts' checksummed addresses, in the order they were added."""
        return tuple(a.address for a in self._index.accounts)

    @property
    def default_address(self) -> str:
        """The first account's address (what commands use without ``--account``)."""
        return self._index.accounts[0].address

    def get(self, address: str) -> WalletAccount:
        """The account with ``address`` (any hex case), or :class:`AccountNotFound`."""
        try:
            wanted = to_checksum_address(str(address).lower())
        except LedgerError:
            raise AccountNotFound(f"{address!r} is not an address") from None
        for entry in self._index.accounts:
            if entry.address == wanted:
                return entry
        raise AccountNotFound(f"the wallet has no account {wanted}", address=wanted)

    def account(self, address: str | None, passphrase: str) -> LocalAccount:
        """Decrypt one account's key: an eth-account ``LocalAccount`` that can sign.

        ``address`` None: the default (first) account. Raises :class:`AccountNotFound`,
        :class:`WrongPassphrase` or :class:`CorruptKeystore`.
        """
        entry = self.get(self.default_address if address is None else address)
        document = load_keystore(self._directory / entry.keystore)
        key = decrypt_key(document, passphrase, expected_address=entry.address)
        account: LocalAccount = Account.from_key(key)
        return account

    def connect(
        self,
        api_url: str,
        passphrase: str,
        *,
        address: str | None = None,
        siwe_domain: str | None = None,
        timeout: float = 30.0,
        deployment: DeploymentSpec | None = None,
        consent_registry_v2: str | None = None,
    ) -> PatientSession:
        """One account talking to the medtrail API at ``api_url``: grant, revoke, grants,
        cancel signatures, accesses (see :class:`wallets.service.PatientSession`).

        ``deployment``: the contracts to trust (a deployment file's, or addresses), with
        ``consent_registry_v2`` when it has consent version 2; by default the first ones a
        service names, pinned in this wallet's directory (:class:`wallets.pin.DeploymentPin`)."""
        from wallets.client import MedtrailClient  # imported here: no cycle
        from wallets.grants import LocalGrants
        from wallets.heads import IndexHeads
        from wallets.pin import DeploymentPin
        from wallets.service import PatientSession

        account = self.account(address, passphrase)
        client = MedtrailClient(api_url, siwe_domain=siwe_domain, timeout=timeout)
        return PatientSession(
            client,
            account,
            DeploymentPin(self._directory, deployment, consent_registry_v2),
            IndexHeads(self._directory),
            LocalGrants(self._directory),
        )

    def verify_passphrase(self, passphrase: str) -> None:
        """Raise :class:`WrongPassphrase` unless ``passphrase`` opens this wallet."""
        self._check_passphrase(self._index, passphrase)

    # -- changing ----------------------------------------------------------------------

    def add_account(self, passphrase: str) -> WalletAccount:
        """Derive, store and list the next BIP-44 account of the wallet's mnemonic."""
        with _locked(self._directory):
            index = _read_index(self._directory)
            if index.seed is None:
                raise WalletError(
                    "this wallet has no mnemonic to derive accounts from; import keys instead"
                )
            seed_doc = load_keystore(self._directory / SEED_FILE, key=False)
            mnemonic = entropy_to_mnemonic(decrypt_secret(seed_doc, passphrase))
            known = {a.address for a in index.accounts}
            i = index.seed.next_index
            key = derive_private_key(mnemonic, i)
            while address_of(key) in known:  # imported earlier as a private key
                i += 1
                key = derive_private_key(mnemonic, i)
            address = address_of(key)
            now = _now()
            entry = WalletAccount(
                address,
                AccountSource.MNEMONIC,
                _keystore_name(address, now),
                now,
                index=i,
                path=derivation_path(i),
            )
            self._commit(
                index,
                entry,
                encrypt_key(key, passphrase, scrypt_n=self._scrypt_n),
                seed=replace(index.seed, next_index=i + 1),
            )
            return entry

    def add_key(self, private_key: bytes | str, passphrase: str) -> WalletAccount:
        """Import a private key into this wallet (``passphrase`` must be the wallet's)."""
        key = parse_private_key(private_key)
        address = address_of(key)
        with _locked(self._directory):
            index = _read_index(self._directory)
            if address in {a.address for a in index.accounts}:
                raise DuplicateAccount(f"the wallet already holds {address}", address=address)
            self._check_passphrase(index, passphrase)
            now = _now()
            entry = WalletAccount(
                address, AccountSource.PRIVATE_KEY, _keystore_name(address, now), now
            )
            self._commit(index, entry, encrypt_key(key, passphrase, scrypt_n=self._scrypt_n))
            return entry

    def _check_passphrase(self, index: _Index, passphrase: str) -> None:
        if index.seed is not None:
            decrypt_secret(load_keystore(self._directory / SEED_FILE, key=False), passphrase)
            return
        first = index.accounts[0]
        decrypt_key(
            load_keystore(self._directory / first.keystore),
            passphrase,
            expected_address=first.address,
        )

    def _commit(
        self,
        index: _Index,
        entry: WalletAccount,
        keystore: dict[str, Any],
        *,
        seed: SeedInfo | None = None,
    ) -> None:
        save_keystore(self._directory / entry.keystore, keystore)  # never replaces a file
        updated = _Index(
            index.created_at,
            seed if seed is not None else index.seed,
            (*index.accounts, entry),
        )
        _write_index(self._directory, updated)  # the commit point
        self._index = updated


def _build_new_wallet(directory: Path, build: Callable[[Path], _Index]) -> _Index:
    """Build a wallet in a temporary sibling directory, then rename it into place."""
    if (directory / INDEX_FILE).exists():
        raise WalletExists(f"a wallet exists already in {directory}", directory=str(directory))
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise WalletExists(
            f"{directory} exists and is not an empty directory", directory=str(directory)
        )
    parent = directory.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".new", dir=parent))
    except OSError as exc:
        raise KeystoreWriteError(f"cannot create a wallet in {directory}: {exc}") from exc
    try:
        os.chmod(staging, DIR_MODE)
        ensure_private_dir(staging / KEYSTORE_DIR)
        write_private_file(staging / LOCK_FILE, b"")
        index = build(staging)
        _write_index(staging, index)
        try:
            os.rename(staging, directory)  # replaces an empty directory, refuses another
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise WalletExists(
                    f"{directory} was filled while the wallet was being created",
                    directory=str(directory),
                ) from exc
            raise KeystoreWriteError(f"cannot create a wallet in {directory}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(parent)
    return index
