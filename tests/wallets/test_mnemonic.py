"""wallets.mnemonic: BIP-39 mnemonics and BIP-44 derivation against published vectors."""

from __future__ import annotations

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from wallets.errors import InvalidMnemonic
from wallets.mnemonic import (
    MNEMONIC_WARNING,
    WORD_COUNTS,
    derivation_path,
    derive_account,
    derive_private_key,
    entropy_to_mnemonic,
    generate_mnemonic,
    mnemonic_to_entropy,
    normalize_mnemonic,
)

#: BIP-39 English test vectors (trezor/python-mnemonic vectors.json): entropy -> words.
BIP39_VECTORS = {
    "00000000000000000000000000000000": "abandon abandon abandon abandon abandon abandon "
    "abandon abandon abandon abandon abandon about",
    "7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f": "legal winner thank year wave sausage worth useful "
    "legal winner thank yellow",
    "80808080808080808080808080808080": "letter advice cage absurd amount doctor acoustic "
    "avoid letter advice cage above",
    "ffffffffffffffffffffffffffffffff": "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong",
    "9e885d952ad362caeb4efe34a8e91bd2": "ozone drill grab fiber curtain grace pudding thank "
    "cruise elder eight picnic",
    "00" * 32: "abandon " * 23 + "art",
}

#: eth-account's ``Account.from_mnemonic`` documentation: the first ten accounts of this
#: mnemonic on m/44'/60'/0'/0/i.
HEALTH_EMBARK = "health embark april buyer eternal leopard want before nominee head thing tackle"
HEALTH_EMBARK_ADDRESSES = [
    "0x61Cc15522D06983Ac7aADe23f9d5433d38e78195",
    "0x1240460F6E370f28079E5F9B52f9DcB759F051b7",
    "0xd30dC9f996539826C646Eb48bb45F6ee1D1474af",
    "0x47e64beb58c9A469c5eD086aD231940676b44e7C",
    "0x6D39032ffEF9987988a069F52EFe4d95D0770555",
    "0x3836A6530D1889853b047799Ecd8827255072e77",
    "0xed5490dEfF8d8FfAe45cb4066C3daC7C6BFF6a22",
    "0xf04F9Ff322799253bcC6B12762AD127570a092c5",
    "0x900F7fa9fbe85BB25b6cdB94Da24D807f7feb213",
    "0xa248e118b0D19010387b1B768686cd9B473FA137",
]
#: ... and its 24-word example.
CORAL = (
    "coral allow abandon recipe top tray caught video climb similar prepare bracket antenna "
    "rubber announce gauge volume hub hood burden skill immense add acid"
)
CORAL_ADDRESS = "0x9AdA5dAD14d925f4df1378409731a9B71Bc8569d"
#: The first account of "abandon ... about" in MetaMask, ethers and Foundry.
ABANDON_ADDRESS = "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"


@pytest.mark.parametrize("entropy", list(BIP39_VECTORS))
def test_bip39_vectors(entropy: str) -> None:
    words = BIP39_VECTORS[entropy]
    assert entropy_to_mnemonic(bytes.fromhex(entropy)) == words
    assert mnemonic_to_entropy(words) == bytes.fromhex(entropy)
    assert normalize_mnemonic(words) == words


def test_eth_account_documented_derivations() -> None:
    addresses = [derive_account(HEALTH_EMBARK, i).address for i in range(10)]
    assert addresses == HEALTH_EMBARK_ADDRESSES
    assert derive_account(CORAL, 0).address == CORAL_ADDRESS
    assert derive_account(BIP39_VECTORS["0" * 32], 0).address == ABANDON_ADDRESS


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(WORD_COUNTS), st.integers(0, 5))
def test_derivation_equals_eth_accounts(words: int, index: int) -> None:
    mnemonic = generate_mnemonic(words)
    flag = Account._use_unaudited_hdwallet_features
    Account._use_unaudited_hdwallet_features = True  # eth-account's own switch, restored
    try:
        expected = Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{index}")
    finally:
        Account._use_unaudited_hdwallet_features = flag
    assert derive_private_key(mnemonic, index) == bytes(expected.key)


def test_does_not_flip_eth_accounts_global_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other code in the process (the anvil harness) may have switched it on: start from off.
    monkeypatch.setattr(Account, "_use_unaudited_hdwallet_features", False)
    derive_account(HEALTH_EMBARK, 0)
    assert Account._use_unaudited_hdwallet_features is False


@pytest.mark.parametrize("words", WORD_COUNTS)
def test_generate(words: int) -> None:
    mnemonics = {generate_mnemonic(words) for _ in range(5)}
    assert len(mnemonics) == 5
    for mnemonic in mnemonics:
        assert len(mnemonic.split(" ")) == words
        assert normalize_mnemonic(mnemonic) == mnemonic
        assert len(mnemonic_to_entropy(mnemonic)) == words * 4 // 3


@pytest.mark.parametrize("words", [0, 11, 13, 25, 256])
def test_generate_refuses_other_lengths(words: int) -> None:
    with pytest.raises(ValueError, match="words"):
        generate_mnemonic(words)


def test_normalisation_accepts_case_and_whitespace() -> None:
    messy = "  Health\tEMBARK april\n buyer eternal leopard want  before nominee head thing tackle "
    assert normalize_mnemonic(messy) == HEALTH_EMBARK
    assert derive_account(messy, 0).address == HEALTH_EMBARK_ADDRESSES[0]


def test_refuses_wrong_word_count() -> None:
    with pytest.raises(InvalidMnemonic, match="got 11"):
        normalize_mnemonic(" ".join(HEALTH_EMBARK.split()[:11]))
    with pytest.raises(InvalidMnemonic, match="got 0"):
        normalize_mnemonic("")


def test_refuses_unknown_words_without_echoing_them() -> None:
    words = HEALTH_EMBARK.split()
    words[2], words[7] = "aprill", "bfore"
    with pytest.raises(InvalidMnemonic, match="word\\(s\\) 3, 8 ") as info:
        normalize_mnemonic(" ".join(words))
    assert "aprill" not in str(info.value)
    assert info.value.context == {"positions": [3, 8]}


def test_refuses_prefixes_that_bip39_tools_expand() -> None:
    with pytest.raises(InvalidMnemonic, match="word\\(s\\) 1 "):
        normalize_mnemonic("heal" + HEALTH_EMBARK[len("health") :])


def test_refuses_bad_checksum() -> None:
    words = HEALTH_EMBARK.split()
    words[0], words[1] = words[1], words[0]
    with pytest.raises(InvalidMnemonic, match="checksum"):
        normalize_mnemonic(" ".join(words))
    with pytest.raises(InvalidMnemonic, match="checksum"):
        mnemonic_to_entropy("abandon " * 11 + "abandon")


def test_refuses_other_languages_and_types() -> None:
    spanish = "ábaco " * 11 + "abierto"
    with pytest.raises(InvalidMnemonic):
        normalize_mnemonic(spanish)
    with pytest.raises(InvalidMnemonic):
        normalize_mnemonic(b"abandon" * 12)  # type: ignore[arg-type]


def test_entropy_lengths() -> None:
    with pytest.raises(InvalidMnemonic):
        entropy_to_mnemonic(b"\x00" * 15)


def test_derivation_paths() -> None:
    assert derivation_path(0) == "m/44'/60'/0'/0/0"
    assert derivation_path(2**31 - 1) == "m/44'/60'/0'/0/2147483647"
    for bad in (-1, 2**31, True, 1.0):
        with pytest.raises(ValueError, match="account index"):
            derivation_path(bad)  # type: ignore[arg-type]


def test_warning_says_what_matters() -> None:
    assert "WRITE THESE WORDS DOWN" in MNEMONIC_WARNING
    assert "not show" in MNEMONIC_WARNING
