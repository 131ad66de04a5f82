"""wallets.keystore: v3 scrypt keystores, atomic owner-only writes, passphrases."""

from __future__ import annotations

import json
import os
import stat
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from eth_account import Account
from eth_keyfile.keyfile import decode_keyfile_json

from ledger.eip712 import SECP256K1_N
from tests.wallets.conftest import FAST_N, OTHER_PASSPHRASE, PASSPHRASE
from wallets.errors import (
    CorruptKeystore,
    InvalidPrivateKey,
    KeystoreWriteError,
    PassphraseRequired,
    WalletError,
    WeakPassphrase,
    WrongPassphrase,
)
from wallets.keystore import (
    DEFAULT_SCRYPT_N,
    MAX_SCRYPT_MEMORY,
    PASSPHRASE_ENV,
    InsecurePermissionsWarning,
    check_new_passphrase,
    decrypt_key,
    decrypt_secret,
    encrypt_key,
    encrypt_secret,
    load_keystore,
    read_passphrase,
    save_keystore,
    validate_keystore,
    write_private_file,
)

KEY_A = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
KEY_B = bytes.fromhex("11" * 32)
ADDRESS_A = Account.from_key(KEY_A).address

#: The scrypt test vector of the Web3 Secret Storage definition (ethereum/wiki, also in
#: go-ethereum's accounts/keystore/testdata/v3_test_vector.json, web3.js and ethers).
WIKI_SCRYPT_VECTOR: dict[str, Any] = {
    "crypto": {
        "cipher": "aes-128-ctr",
        "cipherparams": {"iv": "83dbcc02d8ccb40e466191a123791e0e"},
        "ciphertext": "d172bf743a674da9cdad04534d56926ef8358534d458fffccd4e6ad2fbde479c",
        "kdf": "scrypt",
        "kdfparams": {
            "dklen": 32,
            "n": 262144,
            "r": 1,
            "p": 8,
            "salt": "ab0c7876052600dd703518d6fc3fe8984592145b591fc8fb5c6d43190334ba19",
        },
        "mac": "2103ac29920d71da29f15d75b4a16dbe95cfd7ff8faea1056c33131d846e3097",
    },
    "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
    "version": 3,
}
WIKI_PASSWORD = "testpassword"
WIKI_KEY = bytes.fromhex("7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d")
WIKI_ADDRESS = "008aeeda4d805471df9b2a5b0f38a0c3bcba786b"


@pytest.fixture(scope="module")
def keystore_a() -> dict[str, Any]:
    return encrypt_key(KEY_A, PASSPHRASE, scrypt_n=FAST_N)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """Write with the most permissive umask: the modes must not depend on it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- format


def test_encrypt_key_writes_a_scrypt_v3_keystore(keystore_a: dict[str, Any]) -> None:
    assert keystore_a["version"] == 3
    assert keystore_a["address"] == ADDRESS_A[2:].lower()
    crypto = keystore_a["crypto"]
    assert crypto["cipher"] == "aes-128-ctr"
    assert crypto["kdf"] == "scrypt"
    assert crypto["kdfparams"]["n"] == FAST_N
    assert (crypto["kdfparams"]["r"], crypto["kdfparams"]["p"]) == (8, 1)
    assert KEY_A.hex() not in json.dumps(keystore_a)
    assert validate_keystore(keystore_a) == keystore_a


def test_default_work_factor_is_geths_standard() -> None:
    assert DEFAULT_SCRYPT_N == 262144


def test_our_keystores_open_with_eth_account_and_theirs_with_us(
    keystore_a: dict[str, Any],
) -> None:
    assert bytes(Account.decrypt(keystore_a, PASSPHRASE)) == KEY_A
    theirs = Account.encrypt(KEY_B, PASSPHRASE, kdf="scrypt", iterations=FAST_N)
    assert decrypt_key(theirs, PASSPHRASE) == KEY_B


def test_decrypts_the_web3_secret_storage_scrypt_vector() -> None:
    # As geth writes it: with an address, and "Crypto" capitalised (one scrypt run: N=2**18).
    document = {**WIKI_SCRYPT_VECTOR, "address": WIKI_ADDRESS}
    document["Crypto"] = document.pop("crypto")
    assert decrypt_key(document, WIKI_PASSWORD) == WIKI_KEY


def test_encrypt_secret_is_v3_and_opens_with_eth_keyfile() -> None:
    entropy = os.urandom(16)
    document = encrypt_secret(entropy, PASSPHRASE, scrypt_n=FAST_N)
    assert "address" not in document
    assert decrypt_secret(document, PASSPHRASE) == entropy
    assert decode_keyfile_json(document, PASSPHRASE.encode()) == entropy
    assert set(document) == {"crypto", "id", "version"}
    reference = Account.encrypt(KEY_A, PASSPHRASE, kdf="scrypt", iterations=FAST_N)
    assert set(document["crypto"]) == set(reference["crypto"])
    assert set(document["crypto"]["kdfparams"]) == set(reference["crypto"]["kdfparams"])
    with pytest.raises(CorruptKeystore, match="32 bytes"):  # not an account keystore
        decrypt_key({**document, "address": "00" * 20}, PASSPHRASE)
    with pytest.raises(ValueError, match="non-empty"):
        encrypt_secret(b"", PASSPHRASE, scrypt_n=FAST_N)


def test_passphrases_are_utf8_and_not_normalised() -> None:
    document = encrypt_key(KEY_A, "pässwörd-ünïcode", scrypt_n=FAST_N)
    assert decrypt_key(document, "pässwörd-ünïcode") == KEY_A
    decomposed = "pa\u0308sswörd-ünïcode"  # the same text, NFD
    with pytest.raises(WrongPassphrase):
        decrypt_key(document, decomposed)


@pytest.mark.parametrize(
    "key",
    [bytes(32), SECP256K1_N.to_bytes(32, "big"), b"\x01" * 31, b"\x01" * 33, "0x1234", "zz" * 32],
)
def test_refuses_invalid_private_keys(key: Any) -> None:
    with pytest.raises(InvalidPrivateKey):
        encrypt_key(key, PASSPHRASE, scrypt_n=FAST_N)


def test_accepts_hex_private_keys() -> None:
    for text in ("0x" + KEY_A.hex(), KEY_A.hex(), "0X" + KEY_A.hex().upper(), f" {KEY_A.hex()}\n"):
        assert decrypt_key(encrypt_key(text, PASSPHRASE, scrypt_n=FAST_N), PASSPHRASE) == KEY_A


@pytest.mark.parametrize("n", [0, 1, 3, 1000, 1 << 21])
def test_refuses_bad_work_factors(n: int) -> None:
    with pytest.raises(ValueError, match="scrypt N"):
        encrypt_key(KEY_A, PASSPHRASE, scrypt_n=n)


# ----------------------------------------------------------------------------- refusals


def test_wrong_passphrase(keystore_a: dict[str, Any]) -> None:
    with pytest.raises(WrongPassphrase) as info:
        decrypt_key(keystore_a, OTHER_PASSPHRASE)
    assert info.value.code == "wrong-passphrase"
    assert isinstance(info.value, WalletError)
    with pytest.raises(WrongPassphrase):
        decrypt_key(keystore_a, "")


def test_tampered_ciphertext_reads_as_wrong_passphrase(keystore_a: dict[str, Any]) -> None:
    tampered = json.loads(json.dumps(keystore_a))
    ciphertext = tampered["crypto"]["ciphertext"]
    tampered["crypto"]["ciphertext"] = ("0" if ciphertext[0] != "0" else "1") + ciphertext[1:]
    with pytest.raises(WrongPassphrase, match="altered"):
        decrypt_key(tampered, PASSPHRASE)


def test_keystore_holding_another_accounts_key(keystore_a: dict[str, Any]) -> None:
    lying = {**keystore_a, "address": Account.from_key(KEY_B).address[2:].lower()}
    with pytest.raises(CorruptKeystore, match="holds the key of"):
        decrypt_key(lying, PASSPHRASE)
    with pytest.raises(CorruptKeystore, match="is for"):
        decrypt_key(keystore_a, PASSPHRASE, expected_address=Account.from_key(KEY_B).address)


def _variant(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(base))
    *parents, last = path.split(".")
    target = document
    for part in parents:
        target = target[part]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return document


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("version", 4, "v3"),
        ("version", "3", "v3"),
        ("version", True, "v3"),
        ("version", _DELETE, "v3"),
        ("crypto", _DELETE, "crypto"),
        ("crypto", "scrypt", "crypto"),
        ("crypto.cipher", "aes-128-cbc", "cipher"),
        ("crypto.kdf", "pbkdf2", "not a scrypt keystore"),
        ("crypto.kdf", "argon2id", "not a scrypt keystore"),
        ("crypto.kdfparams", _DELETE, "kdfparams"),
        ("crypto.cipherparams", [], "cipherparams"),
        ("crypto.kdfparams.n", 3, "power of two"),
        ("crypto.kdfparams.n", 1 << 30, "too much"),
        ("crypto.kdfparams.n", "16", "positive int"),
        ("crypto.kdfparams.r", 0, "positive int"),
        ("crypto.kdfparams.p", 1 << 10, "too much"),
        ("crypto.kdfparams.dklen", 16, "dklen"),
        ("crypto.kdfparams.salt", "xyz", "salt"),
        ("crypto.cipherparams.iv", "00", "iv"),
        ("crypto.ciphertext", "", "empty"),
        ("crypto.ciphertext", "00" * 31, "32 bytes"),
        ("crypto.ciphertext", 42, "ciphertext"),
        ("crypto.mac", "00" * 31, "mac"),
        ("address", _DELETE, "address"),
        ("address", "0x" + "00" * 20, "address"),
    ],
)
def test_refuses_foreign_or_broken_keystores(
    keystore_a: dict[str, Any], path: str, value: Any, match: str
) -> None:
    document = _variant(keystore_a, path, value)
    with pytest.raises(CorruptKeystore, match=match):
        decrypt_key(document, PASSPHRASE)


def test_refuses_a_pbkdf2_keystore_from_eth_account() -> None:
    pbkdf2 = Account.encrypt(KEY_A, PASSPHRASE, kdf="pbkdf2", iterations=2)
    with pytest.raises(CorruptKeystore, match="not a scrypt keystore"):
        decrypt_key(pbkdf2, PASSPHRASE)


def test_refuses_a_memory_bomb_without_running_scrypt(keystore_a: dict[str, Any]) -> None:
    bomb = _variant(keystore_a, "crypto.kdfparams.n", 1 << 40)
    started = time.perf_counter()
    with pytest.raises(CorruptKeystore, match="too much"):
        decrypt_key(bomb, PASSPHRASE)
    assert time.perf_counter() - started < 0.5
    assert MAX_SCRYPT_MEMORY < 128 * (1 << 21) * 8  # 2**21 with r = 8 is over the limit too


@pytest.mark.parametrize(
    "document",
    [[], "keystore", 3, None, {}, {"foo": 1}, {"format": "medtrail-wallet", "version": 1}],
)
def test_refuses_foreign_json(document: Any) -> None:
    with pytest.raises(CorruptKeystore):
        decrypt_key(document, PASSPHRASE)


# ----------------------------------------------------------------------------- files


def test_save_and_load(tmp_path: Path, keystore_a: dict[str, Any], umask_zero: None) -> None:
    path = tmp_path / "new-dir" / "keystore" / "UTC--x"
    save_keystore(path, keystore_a)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert load_keystore(path) == keystore_a
    assert decrypt_key(load_keystore(path), PASSPHRASE) == KEY_A
    assert sorted(p.name for p in path.parent.iterdir()) == ["UTC--x"]  # no temp files


def test_save_does_not_touch_an_existing_parent(tmp_path: Path, keystore_a: dict[str, Any]) -> None:
    tmp_path.chmod(0o755)
    save_keystore(tmp_path / "k", keystore_a)
    assert mode(tmp_path) == 0o755


def test_save_refuses_to_replace_unless_asked(tmp_path: Path, keystore_a: dict[str, Any]) -> None:
    path = tmp_path / "k"
    save_keystore(path, keystore_a)
    other = encrypt_key(KEY_B, PASSPHRASE, scrypt_n=FAST_N)
    with pytest.raises(KeystoreWriteError, match="exists already"):
        save_keystore(path, other)
    assert load_keystore(path) == keystore_a
    save_keystore(path, other, overwrite=True)
    assert load_keystore(path) == other
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def _fail(exc: BaseException) -> Callable[..., Any]:
    def raiser(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return raiser


@pytest.mark.parametrize(
    ("target", "exc"),
    [
        ("replace", OSError(28, "No space left on device")),
        ("fsync", OSError(5, "Input/output error")),
        ("write", OSError(28, "No space left on device")),
        ("fchmod", OSError(1, "Operation not permitted")),
    ],
)
def test_failed_replacement_keeps_the_old_keystore_and_leaves_no_temp_file(
    tmp_path: Path,
    keystore_a: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    exc: OSError,
) -> None:
    path = tmp_path / "k"
    save_keystore(path, keystore_a)
    before = path.read_bytes()
    other = encrypt_key(KEY_B, PASSPHRASE, scrypt_n=FAST_N)
    monkeypatch.setattr(os, target, _fail(exc))
    with pytest.raises(KeystoreWriteError, match="cannot write"):
        save_keystore(path, other, overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert decrypt_key(load_keystore(path), PASSPHRASE) == KEY_A
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


@pytest.mark.parametrize("target", ["link", "fsync", "write"])
def test_failed_new_write_leaves_nothing(
    tmp_path: Path, keystore_a: dict[str, Any], monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    monkeypatch.setattr(os, target, _fail(OSError(28, "No space left on device")))
    with pytest.raises(KeystoreWriteError):
        save_keystore(tmp_path / "k", keystore_a)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_no_temp_file_and_propagates(
    tmp_path: Path, keystore_a: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "k"
    save_keystore(path, keystore_a)
    monkeypatch.setattr(os, "fsync", _fail(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_keystore(path, encrypt_key(KEY_B, PASSPHRASE, scrypt_n=FAST_N), overwrite=True)
    monkeypatch.undo()
    assert load_keystore(path) == keystore_a
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def test_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(KeystoreWriteError):
        write_private_file(blocker / "k", b"data")


def test_load_warns_about_loose_permissions(tmp_path: Path, keystore_a: dict[str, Any]) -> None:
    path = tmp_path / "dir" / "k"
    save_keystore(path, keystore_a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_keystore(path)  # 0600 in 0700: silent
    path.chmod(0o644)
    with pytest.warns(InsecurePermissionsWarning, match="chmod 600"):
        assert load_keystore(path) == keystore_a
    path.chmod(0o600)
    path.parent.chmod(0o755)
    with pytest.warns(InsecurePermissionsWarning, match="chmod 700"):
        load_keystore(path)


def test_load_warns_about_another_owner(
    tmp_path: Path, keystore_a: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "k"
    save_keystore(path, keystore_a)
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    with pytest.warns(InsecurePermissionsWarning, match="owned by another user"):
        load_keystore(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"\xff\xfe\x00garbage", b"null", b"[1, 2]", b'{"version": 3}', b"\x00" * 64],
)
def test_load_refuses_corrupt_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k"
    write_private_file(path, content)
    with pytest.raises(CorruptKeystore, match=str(path)):
        load_keystore(path)


def test_load_refuses_truncated_keystore(tmp_path: Path, keystore_a: dict[str, Any]) -> None:
    path = tmp_path / "k"
    save_keystore(path, keystore_a)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptKeystore, match="not JSON"):
        load_keystore(path)


def test_load_missing_keystore(tmp_path: Path) -> None:
    with pytest.raises(CorruptKeystore, match="missing"):
        load_keystore(tmp_path / "nope")


# ----------------------------------------------------------------------------- passphrases


def test_passphrase_from_the_environment() -> None:
    assert read_passphrase(environ={PASSPHRASE_ENV: PASSPHRASE}) == PASSPHRASE
    assert read_passphrase(new=True, environ={PASSPHRASE_ENV: PASSPHRASE}) == PASSPHRASE


def test_passphrase_from_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, OTHER_PASSPHRASE)
    assert read_passphrase() == OTHER_PASSPHRASE


def test_passphrase_from_a_hidden_prompt() -> None:
    with CliRunner().isolation(input=PASSPHRASE + "\n") as streams:
        assert read_passphrase(environ={}) == PASSPHRASE
    assert PASSPHRASE.encode() not in streams[0].getvalue()  # not echoed
    assert b"Wallet passphrase" in streams[0].getvalue()


def test_empty_environment_variable_falls_back_to_the_prompt() -> None:
    with CliRunner().isolation(input=PASSPHRASE + "\n"):
        assert read_passphrase(environ={PASSPHRASE_ENV: ""}) == PASSPHRASE


def test_new_passphrase_is_confirmed() -> None:
    typed = f"{PASSPHRASE}\nsomething else\n{PASSPHRASE}\n{PASSPHRASE}\n"
    with CliRunner().isolation(input=typed) as streams:
        assert read_passphrase(new=True, environ={}) == PASSPHRASE
    assert b"do not match" in streams[0].getvalue()


def test_no_input_means_passphrase_required() -> None:
    with CliRunner().isolation(input=""), pytest.raises(PassphraseRequired, match=PASSPHRASE_ENV):
        read_passphrase(environ={})


def test_ctrl_c_at_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(click, "prompt", _fail(click.Abort()))
    with pytest.raises(PassphraseRequired):
        read_passphrase(environ={})


def test_weak_new_passphrases_are_refused() -> None:
    with pytest.raises(WeakPassphrase, match="at least 8"):
        read_passphrase(new=True, environ={PASSPHRASE_ENV: "short"})
    with pytest.raises(WeakPassphrase):
        check_new_passphrase("1234567")
    check_new_passphrase("12345678")
    assert read_passphrase(environ={PASSPHRASE_ENV: "short"}) == "short"  # existing: as is
