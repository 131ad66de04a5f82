"""Patient wallet: keys, consent signatures and sign-in.

:class:`Wallet` and :class:`WalletAccount` are imported on first use (they bring eth-account,
whose imports take seconds that ``medtrail wallet --help`` should not pay).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wallets.errors import WalletError

if TYPE_CHECKING:
    from wallets.wallet import Wallet, WalletAccount

__all__ = ["Wallet", "WalletAccount", "WalletError"]


def __getattr__(name: str) -> Any:
    if name in ("Wallet", "WalletAccount"):
        from wallets import wallet

        return getattr(wallet, name)
    raise AttributeError(f"module 'wallets' has no attribute {name!r}")
