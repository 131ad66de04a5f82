"""``verify=true`` on a trail: the one trail verifier, run by the service against its chain.

A convenience: the regulator's tools recompute all of it without trusting the service. The
code is theirs — :func:`ledger.trail.verify_trail` — fed with what this service reads from the
chain (its own :class:`~ledger.chain.reader.ChainReader`, through a
:class:`~ledger.chain.reader.ChainView` cached for the request, the rules' questions asked in
JSON-RPC batches), so a trail gets the same findings here as from ``verify_trail`` and the
wallet: a bundle against the root the *chain* holds for its checkpoint
(``checkpoint-not-on-chain`` when it holds none), the operator's receipts, every rule.

Only :meth:`ServiceChainView.anchors` is the service's own: rather than scanning the chain's
every ``CheckpointCommitted`` log at each request, it asks the store which checkpoints can
first cover the page's leaves and reads their commits' logs from the chain in the blocks the
store names (a checkpoint the store left out or misplaced can only make an event look
anchored later, never hide a finding).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ledger.audit import Anchor
from ledger.chain.reader import ChainView
from ledger.events import EventBase
from ledger.service import EventView, Ledger
from ledger.trail import IndexClaim, TimeWindows, TrailItem, TrailReport, verify_trail

#: Checkpoints read from the store per query while looking for those covering a page.
_CHECKPOINT_PAGE = 100


class ServiceChainView(ChainView):
    """The service's chain, cached for one answer; anchoring times from the checkpoints the
    store lists, each confirmed on chain."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(ledger.chain)
        self._ledger = ledger

    def anchors(self, leaf_indexes: Sequence[int] = ()) -> list[Anchor]:
        if not leaf_indexes:
            return []
        first, last = min(leaf_indexes), max(leaf_indexes)
        anchors: list[Anchor] = []
        after = first
        while True:
            rows = self._ledger.checkpoints(after=after, limit=_CHECKPOINT_PAGE)
            # Each checkpoint's block and time are in its commit's log, read in the blocks
            # the store names for them (a wrong block only hides a commit: anchored later).
            sizes = {row.tree_size for row in rows if row.block_number is not None}
            blocks = [row.block_number for row in rows if row.block_number is not None]
            commits = self.reader.checkpoint_events(min(blocks), max(blocks)) if blocks else []
            found = {c.tree_size: c for c, _tx in commits if c.tree_size in sizes}
            for row in rows:
                on_chain = found.get(row.tree_size)
                if on_chain is None:
                    continue
                anchors.append(
                    Anchor(
                        on_chain.tree_size,
                        on_chain.root_hash,
                        on_chain.timestamp,
                        on_chain.block_number,
                    )
                )
                if on_chain.tree_size > last:
                    return anchors  # covers every leaf of the page
            if len(rows) < _CHECKPOINT_PAGE:
                return anchors
            after = rows[-1].tree_size


def verify_views(
    ledger: Ledger,
    views: Sequence[EventView],
    *,
    record_ref: bytes | None = None,
    context: Sequence[tuple[int, EventBase]] = (),
    completeness: IndexClaim | None = None,
) -> TrailReport:
    """:func:`ledger.trail.verify_trail` over served views (a page of a record's trail, in log
    order), against the service's chain, with its operator and its time windows.

    ``context`` (:meth:`ledger.service.Ledger.rule_context`) is what the rules look back at
    that ``views`` does not hold — when they are one page of a trail, or one institution's
    part of it: those events move the rules' state forward, unjudged, so that a page is
    judged as the whole trail would be.

    ``completeness`` is the index proof served with the page and the part of the list the page
    covers (:class:`ledger.trail.IndexClaim`): checked against the index root the chain holds.
    """
    chain = ServiceChainView(ledger)
    settings = ledger.settings
    return verify_trail(
        [TrailItem(view.bundle, view.record_ref) for view in views],
        checkpoints=chain,
        facts=chain,
        trusted=chain.trusted,
        windows=TimeWindows(int(time.time()), settings.max_merge_delay, settings.max_backdate),
        operator=ledger.operator.address,
        record_ref=record_ref,
        context=context,
        completeness=completeness,
    )
