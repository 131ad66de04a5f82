"""What a wallet remembers of the histories it verified: one list head per index key.

Each time ``medtrail wallet accesses --rpc-url`` verifies a patient's history against the
verifiable index on chain (docs/index.md) and finds nothing wrong with it, it remembers the
head of the list it verified (never from the service's word alone: without ``--rpc-url`` the
remembered head is checked, not replaced) — its number of events
and the RFC 9162 root over their leaf indexes — in the wallet directory (:data:`HEADS_FILE`),
per deployment and per key. The next time, the verifier checks that the list served then only
grew from it (:func:`ledger.index.verify_list_extends`): a history with fewer events than
before, or with earlier ones removed or changed, is reported (``history-shrunk``) even if the
operator shows a consistent index at the moment — a rewritten history does not go unnoticed
by the one person it is about.

Nothing secret is kept: the heads are hashes and counts. The file is written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ledger.chain.model import TrustedDeployment
from ledger.index import ListHead
from wallets.errors import CorruptWallet
from wallets.files import read_section, write_section

__all__ = ["HEADS_FILE", "IndexHeads", "RememberedHead"]

#: The heads a wallet remembers, in its directory.
HEADS_FILE: Final = "index-heads.json"


@dataclass(frozen=True)
class RememberedHead:
    """A list head the wallet verified, and the checkpoint size it was verified at."""

    head: ListHead
    tree_size: int


def _name(trusted: TrustedDeployment, key: bytes) -> str:
    return f"{trusted.chain_id}:{trusted.audit_log}:0x{key.hex()}"


@dataclass(frozen=True)
class IndexHeads:
    """The heads remembered in ``directory`` (None: nothing is remembered)."""

    directory: Path | None = None

    @property
    def path(self) -> Path | None:
        return None if self.directory is None else self.directory / HEADS_FILE

    def _read(self) -> dict[str, Any]:
        return read_section(self.path, "heads", "move it away to start remembering afresh")

    def get(self, trusted: TrustedDeployment, key: bytes) -> RememberedHead | None:
        """The head remembered for ``key`` on the deployment ``trusted``, if any."""
        found = self._read().get(_name(trusted, key))
        if found is None:
            return None
        try:
            root = bytes.fromhex(str(found["root"]).removeprefix("0x"))
            size, tree_size = int(found["size"]), int(found["treeSize"])
            if len(root) != 32 or size < 0 or tree_size < 0:
                raise ValueError("out of range")
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptWallet(
                f"{self.path} holds a malformed head ({exc}): move it away to start "
                "remembering afresh",
                path=str(self.path),
            ) from None
        return RememberedHead(ListHead(size, root), tree_size)

    def remember(
        self, trusted: TrustedDeployment, key: bytes, head: ListHead, tree_size: int
    ) -> None:
        """Remember ``head`` (verified against the chain at checkpoint ``tree_size``, and
        checked to extend the one remembered before) for ``key``, in place of that one.

        It always replaces it: the caller remembers only a list it verified to extend the
        remembered one, so nothing is lost — and a checkpoint size claimed once cannot freeze
        what is remembered."""
        path = self.path
        if path is None:
            return
        heads = self._read()
        name = _name(trusted, key)
        heads[name] = {"size": head.size, "root": "0x" + head.root.hex(), "treeSize": tree_size}
        write_section(path, "heads", heads)
