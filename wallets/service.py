"""The patient's operations against a medtrail service: grant, revoke, list grants, cancel
outstanding signatures, and "who saw my records" with each proof verified.

Get a :class:`PatientSession` from :meth:`wallets.Wallet.connect` (or build one from a
:class:`~wallets.client.MedtrailClient` and a decrypted account). Signing is always local,
from the service's typed-data definitions (checked against what the contracts verify); the
service only relays signatures and pays the gas. Each operation signs in (EIP-4361) once per
session object, on first use.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from eth_account.signers.local import LocalAccount

from ledger.audit import Anchor
from ledger.chain.model import (
    CheckpointRoots,
    DeploymentSpec,
    OnChainCheckpoint,
    TrustedDeployment,
)
from ledger.chain.reader import ChainView
from ledger.completeness import CompletenessCode
from ledger.consent import GRANT_V2, MAX_GRANT_SECONDS, SignedGrant
from ledger.eip712 import Domain
from ledger.errors import LedgerError
from ledger.events import Action, EventType, Purpose, purposes_from_mask
from ledger.index import ListHead, patient_key
from ledger.redact import url_origin
from ledger.refs import from_hex32
from ledger.trail import (
    DEFAULT_MAX_BACKDATE,
    DEFAULT_MAX_MERGE_DELAY,
    CheckpointSource,
    IndexClaim,
    TimeWindows,
    TrailItem,
    verify_trail,
)
from ledger.verify import Finding, FindingCode
from ledger.wire import CheckpointOut, EventOut
from wallets.client import MedtrailClient, Session
from wallets.consent import (
    ConsentTypedData,
    consent_v2_domain,
    grant_secret,
    sign_grant,
    sign_grant_v2,
    sign_increase_nonce,
    sign_revoke,
)
from wallets.direct import DirectConsent, node_chain_id
from wallets.errors import InvalidConsentRequest, TypedDataMismatch, WalletError
from wallets.grants import KeptGrant, LocalGrants
from wallets.heads import IndexHeads
from wallets.pin import DeploymentPin
from wallets.text import when

__all__ = [
    "CANCEL_WINDOW",
    "SIGNATURE_LIFETIME",
    "AccessEntry",
    "AccessReport",
    "InstitutionNotActive",
    "PatientSession",
    "UnknownInstitution",
    "cancel_directly",
    "grant_ref",
    "grant_status",
    "parse_grant_id",
    "parse_purposes",
    "revoke_directly",
]

#: How long a consent signature may wait to be relayed (seconds): the EIP-712 ``deadline``.
SIGNATURE_LIFETIME: Final = 10 * 60
#: ``cancel-signatures`` moves the nonce this far ahead: signatures made in advance for any
#: of the next nonces (by this or another wallet) are cancelled too.
CANCEL_WINDOW: Final = 1000

#: What a history read just before a checkpoint landed shows: it is read once more.
_RACES: Final = frozenset({FindingCode.PROOF_MISSING, CompletenessCode.TRAIL_OUTDATED})
#: What makes a history's list unfit to be remembered.
_LIST_ERRORS: Final = frozenset(
    {
        CompletenessCode.TRAIL_INCOMPLETE,
        CompletenessCode.TRAIL_OUTDATED,
        CompletenessCode.INDEX_PROOF_MISSING,
        CompletenessCode.HISTORY_SHRUNK,
        CompletenessCode.CHECKPOINT_NOT_ON_CHAIN,
    }
)
#: Seconds to wait before that second read.
RETRY_DELAY: Final = 1.0

#: Trust levels of an accesses report.
TRUST_CHAIN: Final = "chain"
TRUST_SERVICE: Final = "service"


class UnknownInstitution(WalletError):
    """The grantee is not a registered institution."""

    code = "unknown-institution"


class InstitutionNotActive(WalletError):
    """The grantee is registered but suspended: the chain would refuse the grant."""

    code = "institution-not-active"


def parse_purposes(names: Iterable[str]) -> list[Purpose]:
    """Purposes by name (``treatment``, ``public-health``, any case, ``-`` or ``_``)."""
    purposes: list[Purpose] = []
    for name in names:
        key = name.strip().upper().replace("-", "_")
        try:
            purpose = Purpose[key]
        except KeyError:
            known = ", ".join(p.name.lower().replace("_", "-") for p in Purpose)
            raise InvalidConsentRequest(
                f"unknown purpose {name!r}; one of: {known}", purpose=name
            ) from None
        if purpose not in purposes:
            purposes.append(purpose)
    if not purposes:
        raise InvalidConsentRequest("a grant must name at least one purpose")
    return purposes


def grant_status(grant: Mapping[str, Any], now: int | None = None) -> str:
    """``revoked``, ``expired``, ``pending`` (a version-2 grant not committed on chain yet),
    ``not-yet-active`` or ``active`` (by the local clock)."""
    current = int(time.time()) if now is None else now
    if grant.get("revoked") or grant.get("revokedAt"):
        return "revoked"
    # A version-2 grant never committed by its deadline, or committed after it, can cover
    # nothing: the service says so (its status is the chain's rule, not the local clock).
    if grant.get("version") == 2 and grant.get("status") == "expired":
        return "expired"
    if int(grant["expiresAt"]) <= current:
        return "expired"
    if grant.get("version") == 2 and not grant.get("committedAt"):
        return "pending"
    if int(grant["notBefore"]) > current:
        return "not-yet-active"
    return "active"


def grant_ref(grant: Mapping[str, Any]) -> str:
    """How a grant is named to the patient: a version-2 grant by its commitment (its id, as
    a number, has 78 digits), a version-1 grant by its id."""
    if grant.get("version") == 2 and grant.get("commitment"):
        return str(grant["commitment"])
    return str(grant["grantId"])


def parse_grant_id(text: str) -> int:
    """A grant id as the patient types it: a version-1 id (decimal), or a version-2 grant's
    commitment (0x + 64 hex digits) or its decimal id."""
    value = text.strip()
    try:
        if value[:2].lower() == "0x":
            if len(value) != 66:
                raise ValueError(value)
            grant_id = int(value[2:], 16)
        else:
            grant_id = int(value, 10) if value.isdigit() else -1
    except ValueError:
        grant_id = -1
    if not 0 < grant_id < 2**256:
        raise InvalidConsentRequest(
            f"{text!r} is not a grant id: a number, or a commitment (0x and 64 hex digits)"
        )
    return grant_id


def _consent_text(label: str) -> str:
    status, _, reason = label.partition(":")
    if status == "not-covered":
        return f"not covered ({reason})" if reason else "not covered"
    if status == "custodian":
        return "custodian (record holder)"
    if status == "not-applicable":
        return "no consent needed"
    return status


def _enum_name(enum: type[Action] | type[Purpose], value: Any) -> str:
    try:
        return enum(int(value)).name.lower().replace("_", "-")
    except (ValueError, TypeError):
        return str(value)


#: How the history names each type of event (``kind``) and what the institution did.
_KINDS: Final[dict[EventType, tuple[str, str]]] = {
    EventType.RECORD_ACCESS: ("access", ""),
    EventType.PRESCRIPTION_ISSUED: ("prescription", "prescribed"),
    EventType.PRESCRIPTION_DISPENSED: ("dispense", "dispensed"),
    EventType.INSURANCE_CLAIM: ("claim", "claimed"),
    EventType.INSURANCE_PAYMENT: ("payment", "paid"),
}


@dataclass(frozen=True)
class AccessEntry:
    """One event about the patient — an access to their records, a prescription, a
    dispense, a claim or a payment (``kind``) — with its proof checked by the wallet."""

    event_id: str
    institution: str
    institution_name: str | None
    action: str
    purpose: str
    occurred_at: int
    record_ref: str | None
    consent: str
    grant_id: int
    anchored: bool
    #: ``verified``, ``pending`` (not anchored yet, within its deadline) or ``failed``.
    proof: str
    findings: tuple[dict[str, Any], ...] = ()
    #: ``access``, ``prescription``, ``dispense``, ``claim`` or ``payment``.
    kind: str = "access"

    def as_json(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "kind": self.kind,
            "institution": self.institution,
            "institutionName": self.institution_name,
            "action": self.action,
            "purpose": self.purpose,
            "occurredAt": self.occurred_at,
            "recordRef": self.record_ref,
            "consent": self.consent,
            "consentText": _consent_text(self.consent),
            "grantId": self.grant_id,
            "anchored": self.anchored,
            "proof": self.proof,
            "findings": list(self.findings),
        }


@dataclass(frozen=True)
class AccessReport:
    """Every event about the patient (its accesses and the rest of their history), and what
    the proofs were checked against."""

    patient: str
    entries: tuple[AccessEntry, ...]
    #: ``chain`` (checkpoint roots read from the chain) or ``service`` (the service's own).
    trust: str
    note: str
    #: What the verification found about the list as a whole (its order, duplicates, the
    #: chain not consulted), as :meth:`ledger.verify.Finding.to_json`.
    findings: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    #: Whether the history was proven complete (the index proof verified): at which
    #: checkpoint, how many events the index lists and how many were served.
    completeness: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(e.proof != "failed" for e in self.entries) and not any(
            f["severity"] == "error" for f in self.findings
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "trust": self.trust,
            "note": self.note,
            "ok": self.ok,
            "findings": list(self.findings),
            "completeness": dict(self.completeness),
            "events": [e.as_json() for e in self.entries],
            "accesses": [e.as_json() for e in self.accesses],
        }

    @property
    def accesses(self) -> tuple[AccessEntry, ...]:
        """The entries that are accesses to the patient's records."""
        return tuple(e for e in self.entries if e.kind == "access")


class ServiceCheckpoints:
    """:class:`ledger.trail.CheckpointSource` from the service's own word: the checkpoints it
    lists as mined on chain (no ``--rpc-url``: the wallet then cannot read the chain). When
    each event was anchored is not known this way: ``anchors`` is empty."""

    def __init__(self, client: MedtrailClient) -> None:
        self._client = client
        self._sizes: dict[int, OnChainCheckpoint | None] = {}

    @staticmethod
    def _mined(row: CheckpointOut | None) -> OnChainCheckpoint | None:
        if row is None or not row.mined:
            return None
        index_root = row.indexRoot if row.indexRoot is not None else bytes(32)
        return OnChainCheckpoint(row.treeSize, row.rootHash, index_root, row.blockNumber or 0, 0)

    def latest_checkpoint(self) -> OnChainCheckpoint | None:
        latest = self._mined(self._client.latest_checkpoint())
        if latest is not None:
            self._sizes.setdefault(latest.tree_size, latest)
        return latest

    def checkpoint_at(self, size: int) -> CheckpointRoots | None:
        if size not in self._sizes:
            self._sizes[size] = self._mined(self._client.checkpoint(size))
        return self._sizes[size]

    def anchors(self, leaf_indexes: Sequence[int] = ()) -> list[Anchor]:
        return []


class PatientSession:
    """A patient's account talking to one medtrail service."""

    def __init__(
        self,
        client: MedtrailClient,
        account: LocalAccount,
        pin: DeploymentPin | None = None,
        heads: IndexHeads | None = None,
        kept: LocalGrants | None = None,
    ) -> None:
        self.client = client
        self.account = account
        self.pin = pin or DeploymentPin()
        #: The history heads this wallet verified before (none remembered without a directory).
        self.heads = heads or IndexHeads()
        #: The version-2 grants this wallet signed (none kept without a directory).
        self.kept = kept or LocalGrants()
        self._session: Session | None = None
        self._typed: ConsentTypedData | None = None
        self._definitions: dict[str, Any] | None = None
        self._trusted: TrustedDeployment | None = None

    @property
    def address(self) -> str:
        return str(self.account.address)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> PatientSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        try:
            if exc_type is None and self._trusted is not None:
                self.pin.save(self.client.deployment())  # it worked: trust it from now on
        finally:
            self.close()

    # -- plumbing ------------------------------------------------------------------------

    def trusted(self) -> TrustedDeployment:
        """The contracts this wallet trusts (:class:`wallets.pin.DeploymentPin`), checked
        against what the service names: a service naming others is refused."""
        if self._trusted is None:
            self._trusted = self.pin.trusted(self.client.deployment(), self.client.base_url)
        return self._trusted

    def sign_in(self) -> Session:
        """Sign in (EIP-4361) if not signed in yet; the session."""
        if self._session is None or self._session.expires_at <= int(time.time()) + 5:
            self._session = self.client.sign_in(self.account, chain_id=self.trusted().chain_id)
        return self._session

    def typed_data(self) -> ConsentTypedData:
        """The service's consent typed data, checked against the contracts' types and the
        trusted deployment."""
        if self._typed is None:
            trusted = self.trusted()
            self._typed = ConsentTypedData.from_definitions(
                self._served_definitions(),
                chain_id=trusted.chain_id,
                consent_registry=trusted.consent_registry,
            )
        return self._typed

    def _served_definitions(self) -> dict[str, Any]:
        if self._definitions is None:
            self._definitions = self.client.typed_data()
        return self._definitions

    def consent_v2(self) -> Domain | None:
        """The ConsentRegistryV2 domain new grants are signed in (checked against the
        deployment the service names); None when the deployment takes version-1 grants."""
        trusted = self.trusted()
        registry = self.pin.registry_v2(self.client.deployment(), self.client.base_url)
        domain = consent_v2_domain(
            self._served_definitions(), chain_id=trusted.chain_id, registry=registry
        )
        if (domain is None) != (registry is None):
            raise TypedDataMismatch(
                "the service's typed data and its deployment disagree on consent version 2"
                f" (deployment: {registry or 'none'}; typed data: "
                f"{'none' if domain is None else domain.verifying_contract})"
            )
        return domain

    def _with_status(self, grant: dict[str, Any]) -> dict[str, Any]:
        return {**grant, "status": grant_status(grant)}

    # -- operations ----------------------------------------------------------------------

    def check_institution(self, address: str) -> dict[str, Any]:
        """The grantee's registration; :class:`UnknownInstitution` or
        :class:`InstitutionNotActive` when a grant to it would be refused."""
        info = self.client.institution(self.sign_in(), address)
        if info is None:
            raise UnknownInstitution(
                f"{address} is not a registered institution: check the address with the"
                " hospital, pharmacy or insurer",
                institution=address,
            )
        if not info.get("active"):
            raise InstitutionNotActive(
                f"{info.get('name') or address} ({address}) is suspended: it cannot be granted"
                " access now",
                institution=address,
            )
        return info

    def grant(
        self,
        to: str,
        *,
        purposes: Iterable[Purpose | int | str],
        expires_at: int,
        record_ref: bytes | str | None = None,
        not_before: int | None = None,
        check_grantee: bool = True,
    ) -> dict[str, Any]:
        """Grant ``to`` access to ``record_ref`` (None: all records) for ``purposes`` until
        ``expires_at`` (unix seconds); signed here, relayed by the service. Returns the
        grant as the chain holds it, with ``status``."""
        named = [p for p in purposes if isinstance(p, str)]
        chosen: list[Purpose | int] = [p for p in purposes if not isinstance(p, str)]
        chosen += parse_purposes(named) if named else []
        now = int(time.time())
        # Check what can be checked before any network round trip.
        if expires_at <= now:
            raise InvalidConsentRequest(
                f"the expiry {expires_at} is in the past (now {now})", expires_at=expires_at
            )
        start = now if not_before is None else max(now, not_before)
        if expires_at - start > MAX_GRANT_SECONDS:
            raise InvalidConsentRequest(
                f"a grant lasts at most {MAX_GRANT_SECONDS // 86_400} days; this one would last "
                f"{(expires_at - start) // 86_400}",
                expires_at=expires_at,
            )
        if not_before is not None and not_before > expires_at:
            raise InvalidConsentRequest(
                f"notBefore {not_before} is after the expiry {expires_at}",
                not_before=not_before,
                expires_at=expires_at,
            )
        domain = self.consent_v2()
        if domain is not None:
            return self._grant_v2(
                domain,
                to,
                purposes=chosen,
                expires_at=expires_at,
                record_ref=record_ref,
                not_before=not_before,
                check_grantee=check_grantee,
            )
        typed = self.typed_data()
        session = self.sign_in()
        grantee_name = self.check_institution(to).get("name") if check_grantee else None
        signed = sign_grant(
            self.account,
            typed,
            grantee=to,
            purposes=chosen,
            expires_at=expires_at,
            not_before=not_before,
            record_ref=record_ref,
            nonce=self.client.consent_nonce(self.address),
            deadline=now + SIGNATURE_LIFETIME,
        )
        made = self.client.relay_grant(session, signed)
        return self._made(made, session, grantee_name, record_ref)

    def _made(
        self,
        made: dict[str, Any],
        session: Session,
        grantee_name: str | None,
        record_ref: bytes | str | None,
    ) -> dict[str, Any]:
        """A grant just made, with its status, the grantee's name and a warning for a
        record reference no event about the patient names."""
        made = self._with_status(made)
        if grantee_name:
            made["granteeName"] = grantee_name
        unseen = self._unseen_record(session, record_ref)
        if unseen is not None:
            made["warning"] = unseen
        return made

    def _grant_v2(
        self,
        domain: Domain,
        to: str,
        *,
        purposes: list[Purpose | int],
        expires_at: int,
        record_ref: bytes | str | None,
        not_before: int | None,
        check_grantee: bool,
    ) -> dict[str, Any]:
        """Consent version 2: the grant is signed here with a fresh salt and its revocation
        hash (derived from a signature of the key over ``RevocationKey``, never stored nor
        sent), kept in the wallet directory *before* it is sent (so that it can be revoked or
        cancelled without the service), and posted; the service commits it on chain."""
        session = self.sign_in()
        grantee_name = self.check_institution(to).get("name") if check_grantee else None
        try:
            ref = record_ref if not isinstance(record_ref, str) else from_hex32(record_ref)
        except (LedgerError, ValueError):
            raise InvalidConsentRequest(
                f"--record: {record_ref!r} is not a record reference (0x and 64 hex digits)"
            ) from None
        now = int(time.time())
        grant = sign_grant_v2(
            self.account,
            domain,
            grantee=to,
            record_ref=ref,
            purposes=purposes,
            expires_at=expires_at,
            not_before=now if not_before is None else not_before,
            deadline=now + SIGNATURE_LIFETIME,
            now=now,
        )
        self.kept.keep(domain, grant)
        made = self.client.post_grant_v2(session, grant)
        commitment = "0x" + grant.commitment(domain).hex()
        if str(made.get("commitment", "")).lower() != commitment:
            raise WalletError(
                f"the service answered the grant {commitment} with another grant"
                f" ({made.get('commitment')!r}): it is kept in this wallet; check it with"
                " `medtrail wallet grants`"
            )
        return self._made(made, session, grantee_name, ref)

    def _unseen_record(self, session: Session, record_ref: bytes | str | None) -> str | None:
        """A warning when ``record_ref`` never appears in the patient's history (a mistyped
        reference grants access to nothing of theirs, or to a record they do not know of)."""
        if record_ref is None:
            return None
        ref = record_ref if isinstance(record_ref, bytes) else from_hex32(record_ref)
        history, _proof = self.client.history(session, self.address)
        if any(item.recordRef == ref for item in history):
            return None
        return (
            f"record 0x{ref.hex()} does not appear in your history: no event about you names "
            "it yet. Check the reference your provider gave you; revoke the grant if it is wrong."
        )

    def revoke(self, grant_id: int) -> dict[str, Any]:
        """Revoke one of the patient's grants; the grant as the chain holds it now. A grant
        revoked already is refused here, with its revocation time, before anything is signed."""
        domain = self.consent_v2()
        session = self.sign_in()
        kept = self.kept.find(grant_id)
        held = self.client.grant_or_none(session, grant_id)
        if domain is not None and (kept is not None or (held or {}).get("version") == 2):
            return self._revoke_v2(session, domain, grant_id, kept, held)
        if held is None:
            held = self.client.grant(session, grant_id)  # the service's own 404, as before
        typed = self.typed_data()
        if int(held.get("revokedAt") or 0):
            raise InvalidConsentRequest(
                f"grant {grant_id} is revoked already (since {when(int(held['revokedAt']))})",
                grant_id=grant_id,
            )
        signed = sign_revoke(
            self.account,
            typed,
            grant_id=grant_id,
            nonce=self.client.consent_nonce(self.address),
            deadline=int(time.time()) + SIGNATURE_LIFETIME,
        )
        return self._with_status(self.client.relay_revoke(session, signed))

    def _revoke_v2(
        self,
        session: Session,
        domain: Domain,
        grant_id: int,
        kept: KeptGrant | None,
        held: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Consent version 2: derive the grant's revocation secret and have the service present
        it on chain. The grant (for its salt) is this wallet's own copy, else the service's,
        checked to be this patient's grant with this id."""
        ref = f"{grant_id:#066x}"
        if held is None:
            raise InvalidConsentRequest(
                f"the service does not hold grant {ref}: it never received it, so it cannot "
                "commit it. To make sure no one can, revoke it on chain yourself: "
                "`medtrail wallet revoke --direct --rpc-url URL`",
                grant_id=ref,
            )
        if held.get("revoked") or held.get("revokedAt"):
            raise InvalidConsentRequest(
                f"grant {ref} is revoked already (since {when(int(held.get('revokedAt') or 0))})",
                grant_id=ref,
            )
        grant = kept.grant if kept is not None and kept.domain == domain else None
        if grant is None:
            grant = _served_grant(held)
            if grant.grant_id(domain) != grant_id or grant.patient != self.address:
                raise WalletError(
                    f"the service serves grant {ref} with terms whose commitment is not "
                    f"{ref}, or of another patient: refusing to derive its revocation",
                    grant_id=ref,
                )
        secret = grant_secret(self.account, domain, grant)
        return self._with_status(self.client.revoke_v2(session, grant_id, secret))

    def grants(self) -> list[dict[str, Any]]:
        """Every grant the patient made (revoked and expired included), with ``status``
        (following the service's pages to the end)."""
        session = self.sign_in()
        names: dict[str, str | None] = {}
        found = []
        for held in self.client.grants(session, self.address):
            grant = self._with_status(held)
            grantee = str(grant.get("grantee", ""))
            if grantee and grantee not in names:
                info = self.client.institution(session, grantee)
                names[grantee] = None if info is None else info.get("name")
            grant["granteeName"] = names.get(grantee)
            found.append(grant)
        served = {int(g["grantId"]) for g in found}
        domain = self.consent_v2()
        for kept in [] if domain is None else self.kept.of(domain, self.address):
            if kept.grant_id not in served:  # signed here, never (or not yet) at the service
                found.append(_unsent(kept))
        return found

    def grant_info(self, grant_id: int) -> dict[str, Any]:
        return self._with_status(self.client.grant(self.sign_in(), grant_id))

    def cancel_signatures(self, window: int = CANCEL_WINDOW) -> dict[str, Any]:
        """Make every consent signature not yet relayed unusable: on a version-1 deployment
        by moving the consent nonce (``IncreaseNonce``); on version 2 by revoking every signed
        grant of the patient the service has not committed on chain yet (a signature the
        operator sits on can then never become a grant)."""
        if type(window) is not int or window < 1:
            raise InvalidConsentRequest("the window must be a positive integer")
        domain = self.consent_v2()
        if domain is not None:
            return self._cancel_v2(domain)
        typed = self.typed_data()
        session = self.sign_in()
        nonce = self.client.consent_nonce(self.address)
        signed = sign_increase_nonce(
            self.account,
            typed,
            new_nonce=nonce + window,
            nonce=nonce,
            deadline=int(time.time()) + SIGNATURE_LIFETIME,
        )
        answer = self.client.relay_increase_nonce(session, signed)
        return {**answer, "previousNonce": nonce}

    def _cancel_v2(self, domain: Domain) -> dict[str, Any]:
        session = self.sign_in()
        kept = {k.grant_id: k.grant for k in self.kept.of(domain, self.address)}
        cancelled: list[dict[str, Any]] = []
        served: set[int] = set()
        for held in list(self.client.grants(session, self.address)):
            if held.get("version") != 2:
                continue
            grant_id = int(held["grantId"])
            served.add(grant_id)
            if held.get("committedAt") or held.get("revoked") or held.get("revokedAt"):
                continue
            grant = kept.get(grant_id) or _served_grant(held)
            if grant.grant_id(domain) != grant_id or grant.patient != self.address:
                continue  # not a grant of this patient's signing: nothing of theirs to cancel
            secret = grant_secret(self.account, domain, grant)
            answer = self.client.revoke_v2(session, grant_id, secret)
            cancelled.append(self._with_status(answer))
        unsent = [f"{grant_id:#066x}" for grant_id in kept if grant_id not in served]
        return {"version": 2, "cancelled": cancelled, "notAtService": unsent}

    def accesses(
        self,
        *,
        rpc_url: str | None = None,
        max_merge_delay: int | None = DEFAULT_MAX_MERGE_DELAY,
        max_backdate: int | None = DEFAULT_MAX_BACKDATE,
    ) -> AccessReport:
        """Who accessed the patient's records (following the service's pages to the end),
        verified by the wallet with the regulator's verifier (:func:`ledger.trail.verify_trail`)
        against the trusted deployment: with ``rpc_url``, against the chain itself (roots,
        registrations, grants, anchoring times); else against the service's checkpoints (the
        chain not consulted).

        The whole history is read and verified — every event about the patient, with the
        index proof that it is complete (``trail-incomplete``, ``trail-outdated``: see
        :mod:`ledger.completeness`) and that it only grew since the last time this wallet
        verified it (``history-shrunk``; the head it saw is remembered in the wallet's
        directory, :class:`wallets.heads.IndexHeads`). The entries are its accesses; what is
        found about its other events is reported with the history's findings."""
        session = self.sign_in()
        trusted = self.trusted()
        key = patient_key(self.address)
        remembered = self.heads.get(trusted, key)
        view: ChainView | None = None
        if rpc_url:
            try:
                view = ChainView.connect(
                    rpc_url,
                    DeploymentSpec(
                        trusted.institution_registry,
                        trusted.audit_log,
                        trusted.consent_registry,
                        trusted.chain_id,
                        trusted.block_number,
                    ),
                )
            except LedgerError as exc:
                raise WalletError(
                    f"cannot check proofs against the chain at {url_origin(rpc_url)}: {exc.detail}",
                    rpc_url=url_origin(rpc_url),
                ) from None
        try:
            checkpoints: CheckpointSource = (
                view if view is not None else ServiceCheckpoints(self.client)
            )
            for attempt in range(2):
                history, proof = self.client.history(session, self.address)
                report = verify_trail(
                    [TrailItem(item.bundle, item.recordRef) for item in history],
                    checkpoints=checkpoints,
                    facts=view,
                    trusted=trusted,
                    windows=TimeWindows(int(time.time()), max_merge_delay, max_backdate),
                    patient=self.address,
                    completeness=IndexClaim(
                        key,
                        "your history",
                        proof,
                        remembered=None if remembered is None else remembered.head,
                    ),
                )
                if attempt or not (report.codes & _RACES):
                    break
                # Read just before a checkpoint landed: read and verify once more.
                time.sleep(RETRY_DELAY)
                if view is not None:
                    view.refresh()
        finally:
            if view is not None:
                view.close()
        # Remembered only when the chain vouched for it (the index root and the latest
        # checkpoint read from the chain, not the service's word) and nothing was wrong with
        # the list: a head remembered is one every later list must extend.
        if (
            view is not None
            and report.index_head is not None
            and report.index_size is not None
            and not report.codes & _LIST_ERRORS
        ):
            self.heads.remember(trusted, key, report.index_head, report.index_size)
        names: dict[str, str | None] = {}
        entries = [
            self._entry(item, findings, names, session)
            for item, findings in zip(history, report.events, strict=True)
        ]
        if view is not None:
            trust = TRUST_CHAIN
            note = (
                "proofs, signers and grants checked against the chain at "
                f"{url_origin(rpc_url or '')}"
            )
        else:
            trust = TRUST_SERVICE
            note = (
                "proof checked against the service's checkpoint"
                " (pass --rpc-url to check against the chain)"
            )
        return AccessReport(
            self.address,
            tuple(entries),
            trust,
            note,
            findings=tuple(f.to_json() for f in report.findings),
            completeness=_completeness(report.index_head, report.index_size, len(history)),
        )

    def _entry(
        self,
        item: EventOut,
        findings: Sequence[Finding],
        names: dict[str, str | None],
        session: Session,
    ) -> AccessEntry:
        bundle = item.bundle
        event = bundle.event.event
        institution = str(event.institution)
        if institution not in names:
            info = self.client.institution(session, institution)
            names[institution] = None if info is None else info.get("name")
        if any(f.severity == "error" for f in findings):
            proof = "failed"
        else:
            proof = "verified" if bundle.checkpoint is not None else "pending"
        kind, did = _KINDS[item.type]
        access = item.type is EventType.RECORD_ACCESS
        return AccessEntry(
            event_id="0x" + item.eventId.hex(),
            institution=institution,
            institution_name=names[institution],
            action=_enum_name(Action, getattr(event, "action", None)) if access else did,
            purpose=_enum_name(Purpose, getattr(event, "purpose", None)) if access else "",
            occurred_at=int(event.occurredAt),
            record_ref=None if item.recordRef is None else "0x" + item.recordRef.hex(),
            consent=item.consent,
            grant_id=int(getattr(event, "grantId", 0)),
            anchored=bundle.checkpoint is not None,
            proof=proof,
            findings=tuple(f.to_json() for f in findings),
            kind=kind,
        )


def _completeness(head: ListHead | None, tree_size: int | None, served: int) -> dict[str, Any]:
    """What an accesses report says of its history's completeness."""
    if head is None:
        return {"proven": False, "served": served}
    return {"proven": True, "treeSize": tree_size, "listed": head.size, "served": served}


def purpose_names(mask: int) -> list[str]:
    """The purposes of a grant's bitmask, by name."""
    try:
        return [p.name.lower().replace("_", "-") for p in purposes_from_mask(mask)]
    except LedgerError:
        return [hex(mask)]


def _served_grant(held: Mapping[str, Any]) -> SignedGrant:
    """The signed grant inside the service's grant JSON (its other fields set aside)."""
    fields = {name for name, _type in GRANT_V2.fields} | {"signature"}
    return SignedGrant.from_json({k: v for k, v in held.items() if k in fields})


def _unsent(kept: KeptGrant) -> dict[str, Any]:
    """A grant this wallet signed that the service does not list, shaped as the service's."""
    grant = kept.grant
    return {
        **grant.as_json(),
        "version": 2,
        "grantId": kept.grant_id,
        "commitment": "0x" + kept.commitment.hex(),
        "allRecords": grant.record_ref == bytes(32),
        "purposeNames": purpose_names(grant.purposes),
        "committedAt": None,
        "revokedAt": None,
        "revoked": False,
        "status": "not-at-service",
        "granteeName": None,
    }


def revoke_directly(
    account: LocalAccount,
    kept: LocalGrants,
    grant_id: int,
    rpc_url: str,
    *,
    sender: LocalAccount | None = None,
) -> dict[str, Any]:
    """Revoke ``account``'s grant ``grant_id`` on chain through ``rpc_url``, without the
    service: from the wallet's own copy of the grant, its secret derived from the key, sent by
    ``sender`` (default: the patient's account; any funded account will do)."""
    found = kept.find(grant_id)
    if found is None:
        raise InvalidConsentRequest(
            f"this wallet keeps no grant {grant_id:#066x}: revoke it through the service "
            "(without --direct), or from its JSON with `medtrail wallet revocation-secret`",
            grant_id=f"{grant_id:#066x}",
        )
    secret = grant_secret(account, found.domain, found.grant)
    with DirectConsent(rpc_url, found.domain) as chain:
        revoked_at = chain.revoked_at(found.grant.revocation_hash)
        if revoked_at:
            raise InvalidConsentRequest(
                f"grant {grant_id:#066x} is revoked on chain already (since {when(revoked_at)})"
            )
        done = chain.revoke(secret, sender or account)
    return {"grantId": grant_id, "commitment": f"{grant_id:#066x}", **done.as_json()}


def cancel_directly(
    account: LocalAccount,
    kept: LocalGrants,
    rpc_url: str,
    *,
    sender: LocalAccount | None = None,
) -> dict[str, Any]:
    """Revoke on chain, without the service, every grant ``account`` signed in this wallet
    for a registry on the node's chain that is neither committed nor revoked on chain yet."""
    chain_id = node_chain_id(rpc_url)
    mine = [
        k
        for k in kept.all()
        if k.grant.patient == account.address and k.domain.chain_id == chain_id
    ]
    cancelled: list[dict[str, Any]] = []
    by_domain: dict[Domain, list[KeptGrant]] = {}
    for k in mine:
        by_domain.setdefault(k.domain, []).append(k)
    for domain, grants in by_domain.items():
        with DirectConsent(rpc_url, domain) as chain:
            for k in grants:
                if chain.committed_at(k.commitment) or chain.revoked_at(k.grant.revocation_hash):
                    continue
                secret = grant_secret(account, domain, k.grant)
                done = chain.revoke(secret, sender or account)
                commitment = "0x" + k.commitment.hex()
                row = {"grantId": k.grant_id, "commitment": commitment, **done.as_json()}
                cancelled.append(row)
    return {"version": 2, "cancelled": cancelled, "notAtService": []}
