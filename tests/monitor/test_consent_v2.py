"""The monitor under consent version 2 (issue 17): it judges each access as ingest did and
as the audit does — the signed grant fetched from the API, ``grantStatusAt`` on the
ConsentRegistryV2 its deployment names — live, page after page and at each checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.monitor.core import Monitor
from tests.api.world import World, open_world
from tests.monitor.conftest import make_monitor
from tests.scripts.support import _rows, anchor, api_of


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with open_world(tmp_path, embedded_consent_v2=True) as opened:
        yield opened


def _consent(monitor: Monitor) -> list[tuple[str, bytes | None]]:
    return sorted(
        (str(f.finding.code), f.finding.event_id)
        for f in monitor.store.findings()
        if str(f.finding.code).startswith("consent-")
    )


def test_the_monitor_judges_v2_grants_as_ingest_did(world: World, tmp_path: Path) -> None:
    ledger = world.ledger
    grant = world.grant_v2(world.p, world.b.address, world.record_a)
    view, _new = ledger.accept_grant_v2(grant)
    ledger.commit_grants_now()
    revoked_id = int(view.grant_id)
    with api_of(world.env) as api:
        monitor = make_monitor(world.env, api, tmp_path / "m.db")
        try:
            covered, label = world.access_under(world.grant_p)
            assert label == "covered"
            world.revoke_v2_on_chain(world.p, grant)
            after, after_label = world.access_under(revoked_id)
            assert after_label == "not-covered:revoked"
            anchor(ledger)
            report = monitor.step()
            assert report.down == []
            assert _consent(monitor) == [("consent-not-covered", after.eventId)]

            # A grant the operator stops serving: the next access under it is not judged,
            # and said so (never covered, never "not-found").
            _rows(
                ledger,
                "DELETE FROM consent_grants WHERE commitment = :c",
                c=world.grant_p.to_bytes(32, "big"),
            )
            withheld, _label = world.access_under(world.grant_p)
            anchor(ledger)
            monitor.step()
            assert _consent(monitor) == sorted(
                [
                    ("consent-not-covered", after.eventId),
                    ("consent-grant-unavailable", withheld.eventId),
                ]
            )
            assert covered.eventId not in {e for _c, e in _consent(monitor)}
        finally:
            monitor.close()


def test_the_monitor_lists_a_revocation_in_flight_for_review(world: World, tmp_path: Path) -> None:
    access, _receipt, _grant = world.access_revoked_in_flight()
    anchor(world.ledger)
    with api_of(world.env) as api:
        monitor = make_monitor(world.env, api, tmp_path / "m.db")
        try:
            assert monitor.step().down == []
            assert _consent(monitor) == [("consent-revoked-in-flight", access.eventId)]
            (stored,) = [
                f.finding
                for f in monitor.store.findings()
                if f.finding.code == "consent-revoked-in-flight"
            ]
            assert stored.severity == "review"
        finally:
            monitor.close()
