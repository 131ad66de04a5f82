"""Patient wallet: keys, consent signatures and sign-in."""

from wallets.errors import WalletError
from wallets.wallet import Wallet, WalletAccount

__all__ = ["Wallet", "WalletAccount", "WalletError"]
