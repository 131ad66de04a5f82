"""ConsentRegistryV2's one coverage rule, asked by ingest and by the regulator's rules.

The pure side (grants, commitments, revocation secrets) is :mod:`ledger.consent`; sending
transactions (deploy, commit, revoke) is :mod:`ledger.chain.consent_client` (web3). Here, with
no web3 (the regulator's tools install without it): :class:`CommittedConsent`, a grant source
for ingest (:class:`ledger.rules.GrantSource`) that finds the signed grant an access cites in
a :class:`SignedGrants` book and asks the contract's ``grantStatusAt`` view, so a revocation a
patient sent straight to the chain counts from its block, whatever the service saw; and
:class:`CommittedConsentFacts`, the same for the regulator's rules (``ChainFacts``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

from ledger.audit import (
    ChainFacts,
    FactNeeds,
    GrantQuery,
    GrantUnavailable,
    InstitutionStatus,
    Revocation,
)
from ledger.chain.model import ChainError
from ledger.chain.reader import CONSENT_V2, ChainReader, check_contract_code
from ledger.consent import SignedGrant, consent_domain_v2
from ledger.eip712 import Domain, to_checksum_address
from ledger.rules import GrantBatchSource, GrantSource, GrantStatus

#: The contract's name (its artifact).
CONTRACT: Final = CONSENT_V2


class SignedGrants(Protocol):
    """Where the signed version-2 grants are kept (the service's store; a dict in tests)."""

    def signed_grant(self, grant_id: int) -> SignedGrant | None:
        """The signed grant whose id (commitment) is ``grant_id``; None if unknown."""
        ...


@runtime_checkable
class SignedGrantsMany(SignedGrants, Protocol):
    """Signed grants that can be read many at once (the service's store: one query)."""

    def signed_grants(self, grant_ids: Collection[int]) -> Mapping[int, SignedGrant]:
        """The signed grant of each id that names one; the others left out."""
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

    def signed_grants(self, grant_ids: Collection[int]) -> dict[int, SignedGrant]:
        return {i: self._grants[i] for i in grant_ids if i in self._grants}

    def as_mapping(self) -> Mapping[int, SignedGrant]:
        """Every grant kept, by id."""
        return dict(self._grants)


class GrantJudge(Protocol):
    """Asks ConsentRegistryV2's ``grantStatusAt`` (through web3, or the tools' reader)."""

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
    ) -> GrantStatus: ...

    def committed_at(self, commitment: bytes) -> int:
        """Block time of ``commitment`` on chain; 0 if it is not there."""
        ...

    def revoked_at(self, revocation_hash: bytes) -> int:
        """Block time of the revocation whose hash is ``revocation_hash``; 0 if none."""
        ...


def status_call(
    grant_id: int,
    grant: SignedGrant,
    *,
    patient: str,
    grantee: str,
    record_ref: bytes,
    purpose: int,
    time: int,
) -> tuple[int, Any, bytes, tuple[str, str, bytes, int, int]] | None:
    """The arguments of ``grantStatusAt`` for an access; None when the id or the time cannot
    be encoded (no such grant can exist: ``not-found``, without asking the chain)."""
    if not 0 <= grant_id < 2**256 or not 0 <= time < 2**64:
        return None
    access = (to_checksum_address(patient), to_checksum_address(grantee), record_ref, purpose, time)
    return (grant_id, grant.values(), grant.signature, access)


def status_of(value: Any) -> GrantStatus:
    try:
        return GrantStatus(int(value))
    except (ValueError, TypeError) as exc:
        raise ChainError(f"grantStatusAt answered an unknown status: {exc}") from exc


class ReaderConsent:
    """A ConsentRegistryV2 read through the regulator's :class:`ChainReader` (JSON-RPC, no
    web3), after checking that the code at ``address`` is ConsentRegistryV2's."""

    def __init__(self, reader: ChainReader, address: str, *, check: bool = True) -> None:
        self.reader = reader
        self.address = to_checksum_address(address)
        if check:
            check_contract_code(reader.rpc, CONTRACT, self.address)
        self.domain: Domain = consent_domain_v2(reader.trusted.chain_id, self.address)

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
        query = GrantQuery(grant_id, patient, grantee, record_ref, purpose, time)
        return self.statuses([(query, grant)])[0]

    def statuses(self, asked: Sequence[tuple[GrantQuery, SignedGrant]]) -> list[GrantStatus]:
        """:meth:`status_at` for each access and the signed grant it cites, in JSON-RPC
        batches (the reader's batch size)."""
        calls = [
            status_call(
                query.grant_id,
                grant,
                patient=query.patient,
                grantee=query.grantee,
                record_ref=query.record_ref,
                purpose=query.purpose,
                time=query.at,
            )
            for query, grant in asked
        ]
        sent = [call for call in calls if call is not None]
        answers = iter(  # the calls under one grant differ only in the access (argument 3)
            self.reader.call_many(CONTRACT, "grantStatusAt", sent, at=self.address, varying=3)
        )
        return [GrantStatus.NOT_FOUND if c is None else status_of(next(answers)) for c in calls]

    def committed_at(self, commitment: bytes) -> int:
        (value,) = self.reader.call_many(CONTRACT, "committedAt", [(commitment,)], at=self.address)
        return int(value)

    def revoked_at(self, revocation_hash: bytes) -> int:
        return self.revocations([revocation_hash])[0]

    def revocations(self, revocation_hashes: Sequence[bytes]) -> list[int]:
        """:meth:`revoked_at` for each hash, in JSON-RPC batches."""
        calls = [(revocation_hash,) for revocation_hash in revocation_hashes]
        return [
            int(v) for v in self.reader.call_many(CONTRACT, "revokedAt", calls, at=self.address)
        ]


class CommittedConsent:
    """Version-2 consent as ingest's grant source: the signed grant from ``grants``, the
    verdict from the chain. A grant id ``grants`` does not hold is left to ``version_1`` when
    given (a deployment's existing grants stay judged where they are), else ``not-found``."""

    def __init__(
        self,
        chain: GrantJudge,
        grants: SignedGrants,
        version_1: GrantSource | None = None,
    ) -> None:
        self.chain = chain
        self.grants = grants
        self.version_1 = version_1

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
            if self.version_1 is None:
                return GrantStatus.NOT_FOUND
            return GrantStatus(
                int(
                    self.version_1.grant_status_at(
                        grant_id, patient, grantee, record_ref, purpose, time
                    )
                )
            )
        return self.chain.status_at(
            grant_id,
            grant,
            patient=patient,
            grantee=grantee,
            record_ref=record_ref,
            purpose=purpose,
            time=time,
        )

    def grant_statuses(self, queries: Sequence[GrantQuery]) -> list[GrantStatus]:
        """:meth:`grant_status_at` of each question: version 2's in one batch of
        ``grantStatusAt`` calls when the judge asks in batches (:class:`ReaderConsent`),
        version 1's in one batch when ``version_1`` asks in batches
        (:class:`ledger.rules.GrantBatchSource`); otherwise one at a time."""
        answers: dict[int, GrantStatus] = {}
        held: list[tuple[int, GrantQuery, SignedGrant]] = []
        version_1: list[tuple[int, GrantQuery]] = []
        ids = {query.grant_id for query in queries}
        if isinstance(self.grants, SignedGrantsMany):  # one read for all
            found = self.grants.signed_grants(ids)
            kept: Mapping[int, SignedGrant | None] = {i: found.get(i) for i in ids}
        else:
            kept = {i: self.grants.signed_grant(i) for i in ids}
        for position, query in enumerate(queries):
            grant = kept[query.grant_id]
            if grant is not None:
                held.append((position, query, grant))
            elif self.version_1 is None:
                answers[position] = GrantStatus.NOT_FOUND
            else:
                version_1.append((position, query))
        if held and isinstance(self.chain, ReaderConsent):
            statuses = self.chain.statuses([(query, grant) for _, query, grant in held])
            answers.update(zip((position for position, _, _ in held), statuses, strict=True))
        if version_1 and isinstance(self.version_1, GrantBatchSource):
            statuses = self.version_1.grant_statuses([query for _, query in version_1])
            answers.update(zip((position for position, _ in version_1), statuses, strict=True))
        return [
            answers[position] if position in answers else self.grant_status_at(*query)
            for position, query in enumerate(queries)
        ]


class CommittedConsentFacts:
    """:class:`ledger.audit.ChainFacts` for the regulator's rules under consent version 2: the
    institutions from ``base``, every grant question about a version-2 grant ``consent`` holds
    from ``consent`` (so the audit reports ``consent-not-covered`` at ``occurredAt`` exactly as
    ingest labelled the access), and any other grant (version 1's) from ``base``.

    A grant ``consent`` does not hold that version 1 does not know either, but whose id is a
    commitment on the ConsentRegistryV2, is a signed grant the verifier could not obtain: not
    ``not-found`` (ingest may have had it), but :class:`ledger.audit.GrantUnavailable`, which
    the rules report as ``consent-grant-unavailable``."""

    def __init__(self, base: ChainFacts, consent: CommittedConsent) -> None:
        self.base = base
        self.consent = consent
        self._commitments: dict[int, int] = {}
        #: Version 2's answers fetched in batches by :meth:`prefetch`.
        self._judged: dict[GrantQuery, GrantStatus] = {}
        #: When each version-2 grant found revoked was revoked (by its revocation hash).
        self._revoked_at: dict[bytes, int] = {}

    def institution_at(self, address: str, at: int) -> InstitutionStatus:
        return self.base.institution_at(address, at)

    def prefetch(self, needs: FactNeeds) -> None:
        """:class:`ledger.trail.FactSource`: the institutions and version 1's grants in one go
        from ``base`` (when it prefetches); version 2's in batches too when the judge asks in
        batches (:meth:`ReaderConsent.statuses`), else each when asked."""
        held = self.consent.grants.signed_grant
        version_1 = frozenset(q for q in needs.grants if held(q.grant_id) is None)
        prefetch = getattr(self.base, "prefetch", None)
        if prefetch is not None:
            prefetch(FactNeeds(needs.institutions, version_1))
        judge = self.consent.chain
        if isinstance(judge, ReaderConsent):
            asked = []
            for query in needs.grants - version_1:
                grant = held(query.grant_id)
                if grant is not None and query not in self._judged:
                    asked.append((query, grant))
            self._judged.update(zip((q for q, _ in asked), judge.statuses(asked), strict=True))
            hashes = {
                grant.revocation_hash
                for query, grant in asked
                if self._judged[query] is GrantStatus.REVOKED
            }
            unknown = sorted(hashes - self._revoked_at.keys())
            self._revoked_at.update(zip(unknown, judge.revocations(unknown), strict=True))

    def grant_status(self, query: GrantQuery) -> GrantStatus:
        judged = self._judged.get(query)
        if judged is not None:
            return judged
        if self.consent.grants.signed_grant(query.grant_id) is None:
            status = self.base.grant_status(query)
            if status is GrantStatus.NOT_FOUND and self._committed(query.grant_id):
                raise GrantUnavailable(
                    f"grant {query.grant_id} is committed on the ConsentRegistryV2 at "
                    f"{self._committed(query.grant_id)}, but its signed grant was not obtained",
                    grantId=query.grant_id,
                )
            return status
        return self.consent.grant_status_at(
            query.grant_id, query.patient, query.grantee, query.record_ref, query.purpose, query.at
        )

    def grant_revocation(self, grant_id: int) -> Revocation | None:
        """When the grant was revoked (the ConsentRegistryV2's ``revokedAt`` of its
        revocation hash) and the window the patient signed; version 1's from ``base``."""
        grant = self.consent.grants.signed_grant(grant_id)
        if grant is None:
            return self.base.grant_revocation(grant_id)
        key = grant.revocation_hash
        if key not in self._revoked_at:
            self._revoked_at[key] = self.consent.chain.revoked_at(key)
        return Revocation(self._revoked_at[key], grant.not_before, grant.expires_at)

    def _committed(self, grant_id: int) -> int:
        """Block time of ``grant_id`` as a commitment on chain (0: not there; asked once)."""
        if grant_id not in self._commitments:
            fits = 0 <= grant_id < 2**256
            when = self.consent.chain.committed_at(grant_id.to_bytes(32, "big")) if fits else 0
            self._commitments[grant_id] = when
        return self._commitments[grant_id]
