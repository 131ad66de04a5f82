"""The wallet's side of consent version 2 (issue 17): one ordinary account signs grants, derives
every revocation secret again from its key, and any sender can present it on chain."""

from __future__ import annotations

import pytest
from eth_account import Account

from ledger.chain.consent_client import ConsentV2, deploy_consent_v2
from ledger.events import Purpose
from ledger.rules import GrantStatus
from tests.conftest import EmbeddedChain
from wallets.consent import revocation_root_v2, revocation_secret_v2, sign_grant_v2
from wallets.errors import InvalidConsentRequest

RECORD = b"\x42" * 32


def test_one_account_grants_and_anyone_revokes_with_the_secret_it_derives(
    chain: EmbeddedChain,
) -> None:
    registry = ConsentV2(chain.w3, deploy_consent_v2(chain.w3, chain.admin))
    patient = Account.create()  # a wallet's one account, never funded
    grantee = chain.fresh_account().address
    now = chain.now()
    grant = sign_grant_v2(
        patient,
        registry.domain,
        grantee=grantee,
        record_ref=RECORD,
        purposes=[Purpose.TREATMENT],
        expires_at=now + 86_400,
        now=now,
    )
    assert grant.deadline == now + 3600
    relayer = chain.fresh_account()
    registry.commit([grant.commitment(registry.domain)], relayer)
    grant_id = grant.grant_id(registry.domain)
    query = {
        "patient": patient.address,
        "grantee": grantee,
        "record_ref": RECORD,
        "purpose": 0,
    }
    assert registry.status_at(grant_id, grant, time=chain.now(), **query) is GrantStatus.VALID
    # Later, on another device: the same account derives the same secret.
    secret = revocation_secret_v2(Account.from_key(patient.key), registry.domain, grant.salt)
    receipt = registry.revoke(secret, chain.fresh_account())
    revoked_at = int(chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])
    assert registry.status_at(grant_id, grant, time=revoked_at, **query) is GrantStatus.REVOKED


def test_the_root_is_per_account_and_per_registry(chain: EmbeddedChain) -> None:
    first = ConsentV2(chain.w3, deploy_consent_v2(chain.w3, chain.admin))
    second = ConsentV2(chain.w3, deploy_consent_v2(chain.w3, chain.admin))
    alice, bob = Account.create(), Account.create()
    assert revocation_root_v2(alice, first.domain) == revocation_root_v2(alice, first.domain)
    assert revocation_root_v2(alice, first.domain) != revocation_root_v2(bob, first.domain)
    assert revocation_root_v2(alice, first.domain) != revocation_root_v2(alice, second.domain)


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ({"purposes": []}, "at least one purpose"),
        ({"expires_at": 1}, "the window is empty"),
        ({"grantee": "0xnothex"}, "grantee"),
    ],
)
def test_bad_terms_are_refused_before_signing(
    chain: EmbeddedChain, terms: dict[str, object], message: str
) -> None:
    registry = ConsentV2(chain.w3, deploy_consent_v2(chain.w3, chain.admin))
    values: dict[str, object] = {
        "grantee": "0x" + "ab" * 20,
        "record_ref": None,
        "purposes": [Purpose.TREATMENT],
        "expires_at": chain.now() + 86_400,
    }
    values.update(terms)
    with pytest.raises(InvalidConsentRequest, match=message):
        sign_grant_v2(Account.create(), registry.domain, **values)  # type: ignore[arg-type]
