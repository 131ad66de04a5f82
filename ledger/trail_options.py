"""The command-line options of a verification's time windows (:class:`ledger.trail.TimeWindows`),
shared by the regulator's tools and the patient's wallet, so that both hold the operator to the
same promises by default (the service's own defaults) and read the same variables."""

from __future__ import annotations

import click

from ledger.trail import DEFAULT_MAX_BACKDATE, DEFAULT_MAX_MERGE_DELAY

__all__ = ["max_backdate_option", "max_merge_delay_option"]

#: ``--max-merge-delay``: the operator's anchoring promise, in seconds.
max_merge_delay_option = click.option(
    "--max-merge-delay",
    envvar="MEDTRAIL_MAX_MERGE_DELAY",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_MERGE_DELAY,
    show_default=True,
    help="Seconds within which the operator promised to anchor each event.",
)

#: ``--max-backdate``: how long before it was received an event may be dated (the service's
#: ``MEDTRAIL_MAX_BACKDATE``, the verifier's own policy).
max_backdate_option = click.option(
    "--max-backdate",
    envvar="MEDTRAIL_MAX_BACKDATE",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_BACKDATE,
    show_default=True,
    help="Seconds an event may be dated before it is logged: an event first anchored later "
    "than occurredAt + this + the merge delay is reported as backdated.",
)
