"""The garbage collector tuned for processes that handle events by the thousand.

Python collects its youngest generation every 700 allocations (net of frees). A batch of
1,000 events, or an audit holding the whole log, allocates tens of thousands of objects that
live until the batch is answered or the audit ends, so with the default every young
collection walks them again, and every older one the objects of start-up (the modules, the
app, the ledger) as well: issue 15 measured parsing a batch at ~46 µs per event with the
default, ~15 with the collector off, and the audit's collections at ~60 µs per event.

:func:`tune` moves the objects alive now to the permanent generation (``gc.freeze``: no
collection walks them again) and makes young collections rarer. Memory is still reclaimed:
reference counting frees almost everything as soon as it is unused; the collector only finds
reference cycles, which are now found a little later.
"""

from __future__ import annotations

import gc
from typing import Final

#: Allocations (net) between two collections of the youngest generation.
GEN0_THRESHOLD: Final = 50_000


def tune() -> None:
    """Freeze what is alive now and collect young objects in larger steps: call it once a
    process has started (modules imported, long-lived objects built).

    No ``gc.collect()`` first: in ``medtrail serve`` the anchor worker's thread is running by
    then, and a full collection forced at that moment hung the service (the fault suite's
    ``test_kill_9_at_each_anchoring_step_then_restart[sqlite]``: /healthz never answered);
    start-up's little garbage is frozen with the rest."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, older, oldest)
