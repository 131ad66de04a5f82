"""The wallet reads every page of a list (`wallet accesses`: the whole history; `wallet
grants`), against the real API, and refuses a service whose pages do not move forward."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import answering
from tests.wallets.api_env import Service, running_service
from tests.wallets.conftest import FAST_N, PASSPHRASE
from wallets import Wallet
from wallets.client import ApiError, MedtrailClient, Session
from wallets.service import PatientSession


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("service")) as running:
        yield running


class CountingTransport(httpx.HTTPTransport):
    """A real transport that counts the requests of each path, and notes which pages of
    ``/v1/events`` carried an index proof."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []
        self.indexed: list[bool] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        response = super().handle_request(request)
        if request.url.path == "/v1/events":
            response.read()
            self.indexed.append(response.json().get("index") is not None)
        return response


def test_the_wallet_reads_every_page_of_accesses_and_grants(
    service: Service, tmp_path: Path
) -> None:
    wallet, _words = Wallet.create(tmp_path / "wallet", PASSPHRASE, scrypt_n=FAST_N)
    transport = CountingTransport()
    client = MedtrailClient(service.url, transport=transport, page_limit=2)
    env = service.env
    record = env.hospital.record("mrn-pages")
    with PatientSession(client, wallet.account(None, PASSPHRASE)) as patient:
        me = patient.address
        made = [
            patient.grant(
                service.clinic.address,
                purposes=["treatment"],
                expires_at=int(time.time()) + 3600,
                record_ref=record,
                not_before=env.ledger.chain.latest_timestamp() - 60,
            )["grantId"]
            for _ in range(3)
        ]
        accesses = [service.access(env.hospital, me, record) for _ in range(4)]
        service.anchor()
        accesses.append(service.access(env.hospital, me, record))  # pending
        read_before = transport.paths.count("/v1/events")  # a grant to a record reads it too
        del transport.indexed[:]
        report = patient.accesses()
        history_reads = transport.paths.count("/v1/events") - read_before
        grants = patient.grants()
    assert [e.event_id for e in report.entries] == ["0x" + a.hex() for a in accesses]
    assert [e.proof for e in report.entries] == ["verified"] * 4 + ["pending"]
    assert report.ok
    assert [g["grantId"] for g in grants] == made
    assert history_reads == 3  # the history, 2 + 2 + 1
    assert transport.indexed == [True, False, False]  # its index list once, checked over all
    assert transport.paths.count(f"/v1/patients/{me}/grants") == 2  # 2 + 1


@pytest.mark.parametrize("following", [0, "0", 5])
def test_a_service_whose_pages_do_not_move_forward_is_refused(following: object) -> None:
    """`next` must be an integer past the previous page's (a page answering `next: 5` to
    `after=5` for ever would keep the wallet asking)."""
    page = json.dumps({"patient": "0x" + "11" * 20, "accesses": [], "next": following})
    with answering(page.encode()) as url, MedtrailClient(url) as client:
        session = Session("mtp_x", "0x" + "11" * 20, int(time.time()) + 60)
        with pytest.raises(ApiError, match="does not move forward"):
            list(client.accesses(session, "0x" + "11" * 20))
