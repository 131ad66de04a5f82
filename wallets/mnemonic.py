"""BIP-39 mnemonics and BIP-44 derivation of Ethereum accounts.

Built on eth-account's HD wallet code (``eth_account.hdaccount``: the BIP-39 English
wordlist, PBKDF2 seed, BIP-32 derivation), called directly so that eth-account's global
"unaudited HD wallet features" switch is left alone. The tests check the results against
``Account.from_mnemonic`` and published vectors.

* English wordlist only (the wordlist MetaMask and hardware wallets use); words are
  matched exactly (no prefix expansion), case-insensitively, any whitespace between them.
* 12 (default, 128 bits), 15, 18, 21 or 24 words; no BIP-39 passphrase ("25th word").
* Path ``m/44'/60'/0'/0/i`` (BIP-44, coin type 60): account ``i`` of the wallet is the
  one MetaMask shows as "Account i+1" for the same mnemonic.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from eth_account import Account
from eth_account.hdaccount import key_from_seed
from eth_account.hdaccount.mnemonic import Mnemonic, get_wordlist
from eth_account.signers.local import LocalAccount
from eth_account.types import Language

from wallets.errors import InvalidMnemonic

__all__ = [
    "DEFAULT_WORD_COUNT",
    "MNEMONIC_WARNING",
    "PATH_TEMPLATE",
    "WORD_COUNTS",
    "derivation_path",
    "derive_account",
    "derive_private_key",
    "entropy_to_mnemonic",
    "generate_mnemonic",
    "mnemonic_to_entropy",
    "normalize_mnemonic",
]

WORD_COUNTS: Final = (12, 15, 18, 21, 24)
DEFAULT_WORD_COUNT: Final = 12
#: BIP-44 path of account ``index`` (Ethereum, first account, external chain).
PATH_TEMPLATE: Final = "m/44'/60'/0'/0/{index}"
_MAX_INDEX: Final = (1 << 31) - 1  # non-hardened child indexes

#: Shown with a new mnemonic, once.
MNEMONIC_WARNING: Final = """\
WRITE THESE WORDS DOWN, ON PAPER, IN ORDER, AND KEEP THEM SAFE.

They are the only way to recover your wallet and the consent you manage with it if
this computer or your passphrase is lost. Anyone who reads them can sign consent
grants in your name and see who accessed your health records. medtrail will not show
them again, and nobody from medtrail will ever ask for them."""


def _wordlist() -> list[str]:
    return get_wordlist("english")


def generate_mnemonic(words: int = DEFAULT_WORD_COUNT) -> str:
    """A new random English BIP-39 mnemonic (``os.urandom`` entropy)."""
    if words not in WORD_COUNTS:
        raise ValueError(f"a mnemonic has {', '.join(map(str, WORD_COUNTS))} words")
    return Mnemonic(Language.ENGLISH).generate(words)


def normalize_mnemonic(phrase: str) -> str:
    """The canonical form (NFKD, lower case, single spaces) of a valid mnemonic.

    Raises :class:`InvalidMnemonic` naming the problem: word count, unknown words (by
    position, not by value, so that errors never echo the secret), or checksum.
    """
    if not isinstance(phrase, str):
        raise InvalidMnemonic("the mnemonic must be text")
    words = unicodedata.normalize("NFKD", phrase).lower().split()
    if len(words) not in WORD_COUNTS:
        raise InvalidMnemonic(
            f"a mnemonic has 12, 15, 18, 21 or 24 words, got {len(words)}", words=len(words)
        )
    known = set(_wordlist())
    unknown = [i + 1 for i, word in enumerate(words) if word not in known]
    if unknown:
        raise InvalidMnemonic(
            f"word(s) {', '.join(map(str, unknown))} are not in the BIP-39 English wordlist",
            positions=unknown,
        )
    canonical = " ".join(words)
    if not Mnemonic(Language.ENGLISH).is_mnemonic_valid(canonical):
        raise InvalidMnemonic("the mnemonic's checksum does not match: check the words' order")
    return canonical


def mnemonic_to_entropy(phrase: str) -> bytes:
    """The 16..32 bytes of entropy a valid mnemonic encodes."""
    words = normalize_mnemonic(phrase).split(" ")
    index = {word: i for i, word in enumerate(_wordlist())}
    bits = 0
    for word in words:
        bits = (bits << 11) | index[word]
    checksum_bits = len(words) // 3
    entropy_bytes = (len(words) * 11 - checksum_bits) // 8
    return (bits >> checksum_bits).to_bytes(entropy_bytes, "big")


def entropy_to_mnemonic(entropy: bytes) -> str:
    """The English mnemonic of 16, 20, 24, 28 or 32 bytes of entropy."""
    if len(entropy) not in (16, 20, 24, 28, 32):
        raise InvalidMnemonic("mnemonic entropy must be 16, 20, 24, 28 or 32 bytes")
    return Mnemonic(Language.ENGLISH).to_mnemonic(bytes(entropy))


def derivation_path(index: int) -> str:
    """``m/44'/60'/0'/0/{index}``."""
    if type(index) is not int or not 0 <= index <= _MAX_INDEX:
        raise ValueError(f"an account index is an int in 0 .. 2**31-1, got {index!r}")
    return PATH_TEMPLATE.format(index=index)


def derive_private_key(phrase: str, index: int) -> bytes:
    """The private key of account ``index`` (BIP-39 seed, BIP-44 path, no passphrase)."""
    canonical = normalize_mnemonic(phrase)
    seed = Mnemonic.to_seed(canonical, "")
    return bytes(key_from_seed(seed, derivation_path(index)))


def derive_account(phrase: str, index: int) -> LocalAccount:
    """Account ``index`` of a mnemonic, as an eth-account ``LocalAccount``."""
    account: LocalAccount = Account.from_key(derive_private_key(phrase, index))
    return account
