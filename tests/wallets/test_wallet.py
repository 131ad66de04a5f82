"""wallets.wallet: create, import, open, list, derive, use; crash safety and bad input."""

from __future__ import annotations

import json
import os
import stat
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

import wallets
import wallets.keystore as keystore_module
import wallets.wallet as wallet_module
from tests.wallets.conftest import FAST_N, OTHER_PASSPHRASE, PASSPHRASE
from tests.wallets.test_mnemonic import HEALTH_EMBARK, HEALTH_EMBARK_ADDRESSES
from wallets.errors import (
    AccountNotFound,
    CorruptKeystore,
    CorruptWallet,
    DuplicateAccount,
    InvalidMnemonic,
    InvalidPrivateKey,
    KeystoreWriteError,
    WalletError,
    WalletExists,
    WalletNotFound,
    WeakPassphrase,
    WrongPassphrase,
)
from wallets.keystore import InsecurePermissionsWarning
from wallets.mnemonic import derive_account, derive_private_key, normalize_mnemonic
from wallets.wallet import (
    INDEX_FILE,
    KEYSTORE_DIR,
    SEED_FILE,
    WALLET_DIR_ENV,
    AccountSource,
    Wallet,
    default_wallet_dir,
)

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
KEY_ADDRESS = Account.from_key(KEY).address


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def create(directory: Path, **kwargs: Any) -> tuple[Wallet, str]:
    return Wallet.create(directory, PASSPHRASE, scrypt_n=FAST_N, **kwargs)


# ----------------------------------------------------------------------------- create


def test_create_makes_an_owner_only_wallet(wallet_dir: Path) -> None:
    old = os.umask(0)
    try:
        wallet, mnemonic = create(wallet_dir)
    finally:
        os.umask(old)
    assert normalize_mnemonic(mnemonic) == mnemonic
    assert len(mnemonic.split()) == 12
    (account,) = wallet.accounts()
    assert account.address == derive_account(mnemonic, 0).address
    assert (account.source, account.index, account.path) == (
        AccountSource.MNEMONIC,
        0,
        "m/44'/60'/0'/0/0",
    )
    assert wallet.has_mnemonic
    assert wallet.default_address == account.address
    assert mode(wallet_dir) == 0o700
    assert mode(wallet_dir / KEYSTORE_DIR) == 0o700
    for name in (INDEX_FILE, SEED_FILE, account.keystore):
        assert mode(wallet_dir / name) == 0o600
    assert files(wallet_dir) == sorted(
        [INDEX_FILE, SEED_FILE, KEYSTORE_DIR, account.keystore, ".lock"]
    )
    # No litter next to the wallet (the staging directory was renamed into place).
    assert [p.name for p in wallet_dir.parent.iterdir()] == ["wallet"]


def test_keystore_file_names_are_gethstyle(wallet_dir: Path) -> None:
    wallet, _ = create(wallet_dir)
    name = Path(wallet.accounts()[0].keystore).name
    assert name.startswith("UTC--")
    assert name.endswith("--" + wallet.default_address[2:].lower())


def test_the_index_holds_no_secret(wallet_dir: Path) -> None:
    _, mnemonic = create(wallet_dir, words=24, accounts=2)
    index = (wallet_dir / INDEX_FILE).read_text()
    data = json.loads(index)
    assert data["format"] == "medtrail-wallet"
    assert data["seed"] == {
        "file": SEED_FILE,
        "words": 24,
        "path_template": "m/44'/60'/0'/0/{index}",
        "next_index": 2,
    }
    everything = "".join(
        p.read_text() for p in wallet_dir.rglob("*") if p.is_file() and p.name != ".lock"
    )
    for word in set(mnemonic.split()) - {"a"}:
        assert f" {word} " not in everything
    for i in range(2):
        assert derive_private_key(mnemonic, i).hex() not in everything


def test_open_lists_the_same_accounts(wallet_dir: Path) -> None:
    wallet, _ = create(wallet_dir, accounts=3)
    opened = Wallet.open(wallet_dir)
    assert opened.accounts() == wallet.accounts()
    assert opened.addresses() == wallet.addresses()
    assert len(set(opened.addresses())) == 3
    assert [a.index for a in opened.accounts()] == [0, 1, 2]
    assert opened.created_at == wallet.created_at
    assert "accounts=3" in repr(opened)


def test_account_decrypts_a_signing_key(wallet_dir: Path) -> None:
    wallet, mnemonic = create(wallet_dir, accounts=2)
    second = wallet.addresses()[1]
    account = wallet.account(second, PASSPHRASE)
    assert account.address == second
    assert bytes(account.key) == derive_private_key(mnemonic, 1)
    signed = account.sign_message(encode_defunct(text="hello"))
    assert Account.recover_message(encode_defunct(text="hello"), signature=signed.signature) == (
        second
    )
    assert wallet.account(None, PASSPHRASE).address == wallet.default_address
    assert wallet.account(second.lower(), PASSPHRASE).address == second


def test_wrong_passphrase_unknown_account(wallet_dir: Path) -> None:
    wallet, _ = create(wallet_dir)
    with pytest.raises(WrongPassphrase):
        wallet.account(wallet.default_address, OTHER_PASSPHRASE)
    with pytest.raises(WrongPassphrase):
        wallet.verify_passphrase(OTHER_PASSPHRASE)
    wallet.verify_passphrase(PASSPHRASE)
    with pytest.raises(AccountNotFound, match=KEY_ADDRESS):
        wallet.account(KEY_ADDRESS, PASSPHRASE)
    with pytest.raises(AccountNotFound, match="not an address"):
        wallet.get("0x1234")


def test_create_refuses_weak_passphrase_and_leaves_nothing(wallet_dir: Path) -> None:
    with pytest.raises(WeakPassphrase):
        Wallet.create(wallet_dir, "short", scrypt_n=FAST_N)
    assert not wallet_dir.exists()


def test_create_refuses_an_existing_wallet_or_a_non_empty_directory(wallet_dir: Path) -> None:
    create(wallet_dir)
    before = files(wallet_dir)
    with pytest.raises(WalletExists, match="exists already"):
        create(wallet_dir)
    assert files(wallet_dir) == before
    other = wallet_dir.parent / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(WalletExists, match="not an empty directory"):
        create(other)
    assert files(other) == ["notes.txt"]
    a_file = wallet_dir.parent / "a-file"
    a_file.write_text("x")
    with pytest.raises(WalletExists):
        create(a_file)


def test_create_in_an_existing_empty_directory(wallet_dir: Path) -> None:
    wallet_dir.mkdir(mode=0o755)
    create(wallet_dir)
    assert Wallet.exists(wallet_dir)
    assert mode(wallet_dir) == 0o700


def test_create_in_a_new_nested_directory(tmp_path: Path) -> None:
    wallet, _ = create(tmp_path / "a" / "b" / "wallet")
    assert Wallet.open(tmp_path / "a" / "b" / "wallet").addresses() == wallet.addresses()


@pytest.mark.parametrize("fail_at", ["seed", "account", "index", "rename"])
def test_a_failed_creation_leaves_no_wallet_and_no_litter(
    wallet_dir: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    real_save = keystore_module.save_keystore
    real_write_index = wallet_module._write_index

    def save(path: Path, document: Any, **kwargs: Any) -> None:
        if (fail_at == "seed" and path.name == SEED_FILE) or (
            fail_at == "account" and path.parent.name == KEYSTORE_DIR
        ):
            raise KeystoreWriteError("disk full")
        real_save(path, document, **kwargs)

    def write_index(directory: Path, index: Any) -> None:
        if fail_at == "index":
            raise KeystoreWriteError("disk full")
        real_write_index(directory, index)

    def rename(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wallet_module, "save_keystore", save)
    monkeypatch.setattr(wallet_module, "_write_index", write_index)
    if fail_at == "rename":
        monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeystoreWriteError):
        create(wallet_dir)
    monkeypatch.undo()
    assert list(wallet_dir.parent.iterdir()) == []
    create(wallet_dir)  # and the next attempt works


# ----------------------------------------------------------------------------- import


def test_import_mnemonic_restores_the_same_accounts(wallet_dir: Path) -> None:
    wallet = Wallet.import_mnemonic(
        wallet_dir, HEALTH_EMBARK.upper(), PASSPHRASE, accounts=3, scrypt_n=FAST_N
    )
    assert list(wallet.addresses()) == HEALTH_EMBARK_ADDRESSES[:3]
    wallet.add_account(PASSPHRASE)
    assert list(Wallet.open(wallet_dir).addresses()) == HEALTH_EMBARK_ADDRESSES[:4]


def test_import_mnemonic_refuses_bad_words_and_leaves_nothing(wallet_dir: Path) -> None:
    with pytest.raises(InvalidMnemonic):
        Wallet.import_mnemonic(wallet_dir, "abandon " * 12, PASSPHRASE, scrypt_n=FAST_N)
    assert not wallet_dir.exists()


@pytest.mark.parametrize("accounts", [0, 101, -1])
def test_account_count_bounds(wallet_dir: Path, accounts: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 100"):
        create(wallet_dir, accounts=accounts)
    assert not wallet_dir.exists()


def test_import_key_creates_a_wallet(wallet_dir: Path) -> None:
    wallet = Wallet.import_key(wallet_dir, "0x" + KEY.hex(), PASSPHRASE, scrypt_n=FAST_N)
    (account,) = wallet.accounts()
    assert account.address == KEY_ADDRESS
    assert (account.source, account.index, account.path) == (AccountSource.PRIVATE_KEY, None, None)
    assert not wallet.has_mnemonic
    assert not (wallet_dir / SEED_FILE).exists()
    assert bytes(wallet.account(KEY_ADDRESS, PASSPHRASE).key) == KEY
    with pytest.raises(WalletError, match="no mnemonic"):
        wallet.add_account(PASSPHRASE)


def test_import_key_into_an_existing_wallet(wallet_dir: Path) -> None:
    wallet, _ = create(wallet_dir)
    updated = Wallet.import_key(wallet_dir, KEY, PASSPHRASE, scrypt_n=FAST_N)
    assert updated.addresses() == (*wallet.addresses(), KEY_ADDRESS)
    assert Wallet.open(wallet_dir).get(KEY_ADDRESS).source is AccountSource.PRIVATE_KEY
    assert bytes(updated.account(KEY_ADDRESS, PASSPHRASE).key) == KEY


def test_import_key_with_another_passphrase_changes_nothing(wallet_dir: Path) -> None:
    create(wallet_dir)
    before = {p: p.read_bytes() for p in wallet_dir.rglob("*") if p.is_file()}
    with pytest.raises(WrongPassphrase):
        Wallet.import_key(wallet_dir, KEY, OTHER_PASSPHRASE, scrypt_n=FAST_N)
    after = {p: p.read_bytes() for p in wallet_dir.rglob("*") if p.is_file()}
    assert after == before


def test_import_key_into_a_key_only_wallet_checks_the_passphrase(wallet_dir: Path) -> None:
    Wallet.import_key(wallet_dir, KEY, PASSPHRASE, scrypt_n=FAST_N)
    with pytest.raises(WrongPassphrase):
        Wallet.import_key(wallet_dir, b"\x22" * 32, OTHER_PASSPHRASE, scrypt_n=FAST_N)
    wallet = Wallet.import_key(wallet_dir, b"\x22" * 32, PASSPHRASE, scrypt_n=FAST_N)
    assert len(wallet.accounts()) == 2


def test_import_the_same_key_twice(wallet_dir: Path) -> None:
    Wallet.import_key(wallet_dir, KEY, PASSPHRASE, scrypt_n=FAST_N)
    with pytest.raises(DuplicateAccount):
        Wallet.import_key(wallet_dir, KEY.hex(), PASSPHRASE, scrypt_n=FAST_N)
    assert len(Wallet.open(wallet_dir).accounts()) == 1


@pytest.mark.parametrize("key", ["0x12", "nothex" * 10, bytes(32), b"\xff" * 32])
def test_import_refuses_invalid_keys(wallet_dir: Path, key: Any) -> None:
    with pytest.raises(InvalidPrivateKey):
        Wallet.import_key(wallet_dir, key, PASSPHRASE, scrypt_n=FAST_N)
    assert not wallet_dir.exists()


def test_import_key_refuses_a_weak_passphrase_for_a_new_wallet(wallet_dir: Path) -> None:
    with pytest.raises(WeakPassphrase):
        Wallet.import_key(wallet_dir, KEY, "short", scrypt_n=FAST_N)


# ----------------------------------------------------------------------------- add_account


def test_add_account_derives_the_next_index(wallet_dir: Path) -> None:
    wallet, mnemonic = create(wallet_dir)
    added = wallet.add_account(PASSPHRASE)
    assert (added.index, added.path) == (1, "m/44'/60'/0'/0/1")
    assert added.address == derive_account(mnemonic, 1).address
    assert wallet.addresses()[-1] == added.address
    reopened = Wallet.open(wallet_dir)
    assert reopened.addresses() == wallet.addresses()
    assert json.loads((wallet_dir / INDEX_FILE).read_text())["seed"]["next_index"] == 2
    assert bytes(reopened.account(added.address, PASSPHRASE).key) == derive_private_key(mnemonic, 1)


def test_add_account_with_wrong_passphrase_changes_nothing(wallet_dir: Path) -> None:
    wallet, _ = create(wallet_dir)
    before = files(wallet_dir)
    with pytest.raises(WrongPassphrase):
        wallet.add_account(OTHER_PASSPHRASE)
    assert files(wallet_dir) == before


def test_add_account_skips_an_index_already_imported(wallet_dir: Path) -> None:
    wallet, mnemonic = create(wallet_dir)
    wallet.add_key(derive_private_key(mnemonic, 1), PASSPHRASE)
    added = wallet.add_account(PASSPHRASE)
    assert added.index == 2
    assert len(set(wallet.addresses())) == 3


def test_crash_between_keystore_and_index_keeps_the_old_wallet(
    wallet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wallet, _ = create(wallet_dir)
    index_before = (wallet_dir / INDEX_FILE).read_bytes()

    def failing_replace(*args: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(KeystoreWriteError):
        wallet.add_account(PASSPHRASE)
    monkeypatch.undo()
    # The index (the commit point) is intact, with no temp file next to it; the new
    # keystore is an unlisted orphan; the wallet works and the next attempt succeeds.
    assert (wallet_dir / INDEX_FILE).read_bytes() == index_before
    assert not [p for p in wallet_dir.iterdir() if p.name.endswith(".tmp")]
    reopened = Wallet.open(wallet_dir, scrypt_n=FAST_N)
    assert reopened.addresses() == wallet.addresses()[:1]
    reopened.account(None, PASSPHRASE)
    added = reopened.add_account(PASSPHRASE)
    assert added.index == 1
    assert Wallet.open(wallet_dir).addresses()[-1] == added.address


def test_two_writers_do_not_lose_accounts(wallet_dir: Path) -> None:
    create(wallet_dir)
    first, second = (Wallet.open(wallet_dir, scrypt_n=FAST_N) for _ in range(2))
    first.add_account(PASSPHRASE)
    second.add_key(KEY, PASSPHRASE)  # its in-memory index is stale: re-read under the lock
    addresses = Wallet.open(wallet_dir).addresses()
    assert len(addresses) == 3
    assert addresses[-1] == KEY_ADDRESS


def test_concurrent_add_accounts(wallet_dir: Path) -> None:
    create(wallet_dir)
    errors: list[BaseException] = []

    def add() -> None:
        try:
            Wallet.open(wallet_dir, scrypt_n=FAST_N).add_account(PASSPHRASE)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    wallet = Wallet.open(wallet_dir)
    assert sorted(a.index or 0 for a in wallet.accounts()) == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------- open: refusals


def test_open_without_wallet(tmp_path: Path) -> None:
    with pytest.raises(WalletNotFound, match="medtrail wallet create"):
        Wallet.open(tmp_path / "nothing")
    assert not Wallet.exists(tmp_path / "nothing")


def _rewrite_index(wallet_dir: Path, change: Any) -> None:
    path = wallet_dir / INDEX_FILE
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(format="something-else"), "not a medtrail wallet"),
        (lambda d: d.update(version=2), "unsupported wallet version"),
        (lambda d: d.update(extra=1), "unexpected fields"),
        (lambda d: d.update(accounts=[]), "no accounts"),
        (lambda d: d.update(accounts="x"), "no accounts"),
        (lambda d: d["accounts"].append(d["accounts"][0]), "twice"),
        (lambda d: d["accounts"][0].update(address=d["accounts"][0]["address"].lower()), "address"),
        (lambda d: d["accounts"][0].update(keystore="../../../etc/passwd"), "keystore path"),
        (lambda d: d["accounts"][0].update(keystore="/etc/passwd"), "keystore path"),
        (
            lambda d: d["accounts"][0].update(
                keystore=d["accounts"][0]["keystore"][:-40] + "00" * 20
            ),
            "keystore path",
        ),
        (lambda d: d["accounts"][0].update(source="ledger-nano"), "source"),
        (lambda d: d["accounts"][0].update(index=-1), "derivation index"),
        (lambda d: d["accounts"][0].update(path="m/44'/60'/0'/0/7"), "derivation path"),
        (lambda d: d["accounts"][0].pop("created_at"), "exactly"),
        (lambda d: d["accounts"][0].update(created_at="yesterday"), "timestamp"),
        (lambda d: d["accounts"][0].update(created_at="2025-01-01T00:00:00"), "time zone"),
        (lambda d: d.update(seed=None), "no seed"),
        (lambda d: d["seed"].update(next_index=0), "beyond next_index"),
        (lambda d: d["seed"].update(words=13), "word count"),
        (lambda d: d["seed"].update(file="../seed.json"), "seed file"),
        (lambda d: d.update(seed=[]), "seed"),
    ],
)
def test_open_refuses_a_corrupt_index(wallet_dir: Path, change: Any, match: str) -> None:
    create(wallet_dir)
    _rewrite_index(wallet_dir, change)
    with pytest.raises(CorruptWallet, match=match):
        Wallet.open(wallet_dir)


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"[]", b"null"])
def test_open_refuses_unreadable_index(wallet_dir: Path, content: bytes) -> None:
    create(wallet_dir)
    (wallet_dir / INDEX_FILE).write_bytes(content)
    with pytest.raises(CorruptWallet):
        Wallet.open(wallet_dir)


def test_corrupt_or_swapped_keystores(wallet_dir: Path) -> None:
    wallet, _ = create(wallet_dir, accounts=2)
    first, second = wallet.accounts()
    (wallet_dir / first.keystore).write_text('{"version": 3}')
    with pytest.raises(CorruptKeystore):
        wallet.account(first.address, PASSPHRASE)
    # The second account's keystore copied over the first: refused, not silently used.
    (wallet_dir / first.keystore).write_bytes((wallet_dir / second.keystore).read_bytes())
    with pytest.raises(CorruptKeystore, match="is for"):
        wallet.account(first.address, PASSPHRASE)
    (wallet_dir / second.keystore).unlink()
    with pytest.raises(CorruptKeystore, match="missing"):
        wallet.account(second.address, PASSPHRASE)


def test_corrupt_seed(wallet_dir: Path) -> None:
    wallet, _ = create(wallet_dir)
    (wallet_dir / SEED_FILE).write_text('{"foreign": true}')
    with pytest.raises(CorruptKeystore):
        wallet.add_account(PASSPHRASE)


def test_open_warns_about_loose_permissions(wallet_dir: Path) -> None:
    create(wallet_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Wallet.open(wallet_dir)
    wallet_dir.chmod(0o755)
    with pytest.warns(InsecurePermissionsWarning):
        wallet = Wallet.open(wallet_dir)
    wallet_dir.chmod(0o700)
    (wallet_dir / wallet.accounts()[0].keystore).chmod(0o644)
    with pytest.warns(InsecurePermissionsWarning):
        wallet.account(None, PASSPHRASE)


# ----------------------------------------------------------------------------- misc


def test_default_wallet_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_wallet_dir({WALLET_DIR_ENV: str(tmp_path)}) == tmp_path
    assert default_wallet_dir({WALLET_DIR_ENV: "~/w"}) == Path.home() / "w"
    assert default_wallet_dir({}) == Path.home() / ".medtrail" / "wallet"
    monkeypatch.setenv(WALLET_DIR_ENV, str(tmp_path / "x"))
    assert default_wallet_dir() == tmp_path / "x"


def test_package_exports() -> None:
    assert wallets.Wallet is Wallet
    assert issubclass(wallets.WalletError, Exception)
    assert wallets.__doc__


def test_account_json(wallet_dir: Path) -> None:
    wallet = Wallet.import_key(wallet_dir, KEY, PASSPHRASE, scrypt_n=FAST_N)
    data = wallet.accounts()[0].as_json()
    assert data["address"] == KEY_ADDRESS
    assert data["source"] == "private-key"
    assert data["created_at"].endswith("Z")
    assert set(data) == {"address", "source", "index", "path", "keystore", "created_at"}


def test_a_directory_filled_during_creation(
    wallet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        Path(dst).mkdir(exist_ok=True)
        (Path(dst) / "intruder").write_text("x")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(WalletExists, match="filled while"):
        create(wallet_dir)
    monkeypatch.undo()
    assert files(wallet_dir) == ["intruder"]
    assert [p.name for p in wallet_dir.parent.iterdir()] == ["wallet"]
