"""Consent version 2 (issue 17) beside an env's contracts: a ConsentRegistryV2 deployed on the
env's chain, grants the env's patient signs off chain, and the ledger judging consent by it."""

from __future__ import annotations

import secrets
from typing import Any

from eth_account.signers.local import LocalAccount

from ledger.chain.consent import CommittedConsent, GrantBook
from ledger.chain.consent_client import ConsentV2, deploy_consent_v2
from ledger.chain.embedded import funded_account
from ledger.consent import SignedGrant, new_grant, revocation_root, revocation_secret
from ledger.events import Purpose
from tests.support.ledgers import Env

DAY = 86_400


class V2:
    """A ConsentRegistryV2 beside the env's contracts, and the ledger judging consent by it."""

    def __init__(self, env: Env) -> None:
        self.env = env
        w3 = env.ledger.chain.w3
        self.sender: LocalAccount = funded_account(w3)
        self.registry = ConsentV2(w3, deploy_consent_v2(w3, self.sender))
        self.book = GrantBook(self.registry.domain)
        self.root = revocation_root(secrets.token_bytes(65))
        self._previous = env.ledger.ingestor.grants
        env.ledger.ingestor.grants = CommittedConsent(self.registry, self.book, self._previous)

    def __enter__(self) -> V2:
        return self

    def __exit__(self, *_exc: object) -> None:
        """Give the ledger its own grant source back (an env shared by other tests)."""
        self.env.ledger.ingestor.grants = self._previous

    def now(self) -> int:
        return self.env.ledger.chain.latest_timestamp()

    def grant(
        self,
        grantee: str,
        record: bytes,
        purposes: list[Purpose],
        *,
        signer: LocalAccount | None = None,
        **terms: Any,
    ) -> SignedGrant:
        now = self.now()
        values: dict[str, Any] = {
            "not_before": now - 60,
            "expires_at": now + DAY,
            "deadline": now + 600,
        }
        values.update(terms)
        grant = new_grant(
            root=self.root,
            patient=self.env.patient.address,
            grantee=grantee,
            record_ref=record,
            purposes=purposes,
            now=now,
            **values,
        )
        key = (signer or self.env.patient.account).key
        return grant.sign(self.registry.domain, bytes(key))

    def commit(self, *grants: SignedGrant) -> list[int]:
        """The service keeps the grants and commits them in one batch; their ids."""
        ids = [self.book.add(g) for g in grants]
        self.registry.commit([g.commitment(self.registry.domain) for g in grants], self.sender)
        return ids

    def revoke_on_chain(self, grant: SignedGrant) -> None:
        """The patient, from an address of their own choosing, straight to the chain."""
        burner = funded_account(self.env.ledger.chain.w3)
        self.registry.revoke(revocation_secret(self.root, grant.salt), burner)


def service_grant(
    env: Env, grantee: str, record: bytes, *, root: bytes, **terms: Any
) -> SignedGrant:
    """A version-2 grant the env's patient signs for the service's own ConsentRegistryV2 (a
    deployment with ``embedded_consent_v2``): treatment, valid from a minute ago for a day,
    unless ``terms`` say otherwise."""
    ledger = env.ledger
    assert ledger.consent_v2_domain is not None
    now = ledger.chain.latest_timestamp()
    values: dict[str, Any] = {
        "not_before": now - 60,
        "expires_at": now + DAY,
        "deadline": now + 600,
        "purposes": [Purpose.TREATMENT],
        **terms,
    }
    grant = new_grant(
        root=root,
        patient=env.patient.address,
        grantee=grantee,
        record_ref=record,
        now=now,
        **values,
    )
    return grant.sign(ledger.consent_v2_domain, bytes(env.patient.account.key))
