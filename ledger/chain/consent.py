"""ConsentRegistryV2 on a chain: deploy, commit, revoke, and ask the one coverage rule.

The pure side (grants, commitments, revocation secrets) is :mod:`ledger.consent`. This module
only talks to the contract; :class:`CommittedConsent` is a grant source for ingest
(:class:`ledger.ingest.GrantSource`): it finds the signed grant an access cites in a
:class:`SignedGrants` book and asks the contract's ``grantStatusAt`` view, so a revocation a
patient sent straight to the chain counts from its block, whatever the service saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.types import TxReceipt

from ledger.audit import ChainFacts, GrantQuery, InstitutionStatus
from ledger.chain.artifacts import load_artifact
from ledger.chain.model import ChainError
from ledger.chain.tx import call_or_raise, send
from ledger.consent import SignedGrant, consent_domain_v2
from ledger.eip712 import Domain
from ledger.rules import GrantStatus

#: The contract's name (its artifact).
CONTRACT = "ConsentRegistryV2"


def deploy_consent_v2(w3: Web3, deployer: LocalAccount) -> str:
    """Deploy a ConsentRegistryV2; its checksummed address."""
    artifact = load_artifact(CONTRACT)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = send(w3, factory.constructor(), deployer)
    address = receipt["contractAddress"]
    if address is None:
        raise ChainError(f"deploying {CONTRACT} produced no contract address")
    return to_checksum_address(address)


class SignedGrants(Protocol):
    """Where the signed version-2 grants are kept (the service's store; a dict in tests)."""

    def signed_grant(self, grant_id: int) -> SignedGrant | None:
        """The signed grant whose id (commitment) is ``grant_id``; None if unknown."""
        ...


class GrantBook:
    """:class:`SignedGrants` over a mapping from grant id to signed grant."""

    def __init__(self, domain: Domain, grants: Sequence[SignedGrant] = ()) -> None:
        self.domain = domain
        self._grants: dict[int, SignedGrant] = {}
        for grant in grants:
            self.add(grant)

    def add(self, grant: SignedGrant) -> int:
        """Keep ``grant``; its id."""
        grant_id = grant.grant_id(self.domain)
        self._grants[grant_id] = grant
        return grant_id

    def signed_grant(self, grant_id: int) -> SignedGrant | None:
        return self._grants.get(grant_id)

    def as_mapping(self) -> Mapping[int, SignedGrant]:
        """Every grant kept, by id."""
        return dict(self._grants)


class ConsentV2:
    """A deployed ConsentRegistryV2."""

    def __init__(self, w3: Web3, address: str) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.contract: Contract = w3.eth.contract(
            address=self.address, abi=load_artifact(CONTRACT).abi
        )
        self.domain: Domain = consent_domain_v2(int(w3.eth.chain_id), self.address)

    # -- transactions ---------------------------------------------------------------------

    def commit(self, commitments: Sequence[bytes], sender: LocalAccount) -> TxReceipt:
        """Put commitments on chain in one transaction (any sender: the service, a relayer)."""
        return send(self.w3, self.contract.functions.commit(list(commitments)), sender)

    def revoke(self, secret: bytes, sender: LocalAccount) -> TxReceipt:
        """Present a revocation secret (any sender: the patient from any address, a relayer)."""
        return send(self.w3, self.contract.functions.revoke(secret), sender)

    # -- reads ----------------------------------------------------------------------------

    def committed_at(self, commitment: bytes) -> int:
        """Block time of the commitment; 0 if it is not on chain."""
        return int(call_or_raise(self.contract.functions.committedAt(commitment)))

    def revoked_at(self, revocation_hash: bytes) -> int:
        """Block time of the revocation; 0 if none."""
        return int(call_or_raise(self.contract.functions.revokedAt(revocation_hash)))

    def status_at(
        self,
        grant_id: int,
        grant: SignedGrant,
        *,
        patient: str,
        grantee: str,
        record_ref: bytes,
        purpose: int,
        time: int,
    ) -> GrantStatus:
        """``grantStatusAt``: whether ``grant`` (cited as ``grant_id``) covered the access."""
        if not 0 <= grant_id < 2**256 or not 0 <= time < 2**64:
            return GrantStatus.NOT_FOUND
        access = (
            to_checksum_address(patient),
            to_checksum_address(grantee),
            record_ref,
            purpose,
            time,
        )
        value = call_or_raise(
            self.contract.functions.grantStatusAt(grant_id, grant.values(), grant.signature, access)
        )
        try:
            return GrantStatus(int(value))
        except ValueError as exc:
            raise ChainError(f"grantStatusAt answered an unknown status: {exc}") from exc


class CommittedConsent:
    """Version-2 consent as ingest's grant source: the signed grant from ``grants``, the
    verdict from the chain."""

    def __init__(self, chain: ConsentV2, grants: SignedGrants) -> None:
        self.chain = chain
        self.grants = grants

    def grant_status_at(
        self,
        grant_id: int,
        patient: str,
        grantee: str,
        record_ref: bytes,
        purpose: int,
        time: int,
    ) -> GrantStatus:
        grant = self.grants.signed_grant(grant_id)
        if grant is None:
            return GrantStatus.NOT_FOUND
        return self.chain.status_at(
            grant_id,
            grant,
            patient=patient,
            grantee=grantee,
            record_ref=record_ref,
            purpose=purpose,
            time=time,
        )


class CommittedConsentFacts:
    """:class:`ledger.audit.ChainFacts` for the regulator's rules under consent version 2: the
    institutions from ``base``, every grant question from ``consent`` (so the audit reports
    ``consent-not-covered`` at ``occurredAt`` exactly as ingest labelled the access)."""

    def __init__(self, base: ChainFacts, consent: CommittedConsent) -> None:
        self.base = base
        self.consent = consent

    def institution_at(self, address: str, at: int) -> InstitutionStatus:
        return self.base.institution_at(address, at)

    def grant_status(self, query: GrantQuery) -> GrantStatus:
        return self.consent.grant_status_at(
            query.grant_id, query.patient, query.grantee, query.record_ref, query.purpose, query.at
        )
