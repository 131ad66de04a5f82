"""``medtrail demo``: the whole story on the embedded chain, told step by step.

A hospital, a pharmacy and an insurer are registered by a regulator; a patient grants the
pharmacy access from her own wallet (consent version 2: she signs the grant, the service keeps
it and puts only its salted commitment on chain, she pays no gas);
events are signed, checked, logged and anchored; some are refused; the regulator verifies the
record's trail against the root read from the chain; then someone edits the database behind
the service's back, and verification catches it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import text

from ledger.consent import new_grant, revocation_key_typed_data, revocation_root, revocation_secret
from ledger.events import (
    Action,
    EventBase,
    InstitutionKind,
    InsuranceClaim,
    InsurancePayment,
    PrescriptionDispensed,
    PrescriptionIssued,
    Purpose,
    RecordAccess,
    SignedEvent,
    sign_event,
)
from ledger.ingest import BatchRejected
from ledger.refs import record_ref, staff_ref
from ledger.service import Ledger
from ledger.settings import Settings
from ledger.verify import verify_bundle

Echo = Callable[[str], Any]


class _Institution:
    def __init__(self, ledger: Ledger, name: str, kind: InstitutionKind) -> None:
        self.name = name
        self.kind = kind
        self.account: LocalAccount = Account.create()
        self.ref_key = os.urandom(32)
        self.ledger = ledger
        ledger.register_institution(self.account.address, kind, name)

    @property
    def address(self) -> str:
        return str(self.account.address)

    def sign(self, event: EventBase) -> SignedEvent:
        return sign_event(event, self.ledger.domain, bytes(self.account.key))


def _h(text_: str) -> bytes:
    return hashlib.sha256(text_.encode()).digest()


def _short(value: str | bytes) -> str:
    text_ = value if isinstance(value, str) else "0x" + value.hex()
    return text_[:10] + "…"


def run_demo(settings: Settings, echo: Echo) -> None:
    """Run the story; ``echo`` prints a line."""
    step = iter(range(1, 100))

    def title(text_: str) -> None:
        echo("")
        echo(f"{next(step)}. {text_}")

    title("An in-process chain starts and medtrail's contracts are deployed on it.")
    ledger = Ledger.open(settings)
    try:
        _story(ledger, echo, title)
    finally:
        ledger.close()


def _story(ledger: Ledger, echo: Echo, title: Callable[[str], None]) -> None:
    d = ledger.deployment
    echo(f"   chain id {d.chain_id}")
    echo(f"   InstitutionRegistry {d.institution_registry}")
    echo(f"   AuditLog            {d.audit_log}   (also the events' EIP-712 domain)")
    echo(f"   ConsentRegistry     {d.consent_registry}   (version 1: earlier grants)")
    echo(f"   ConsentRegistryV2   {d.consent_registry_v2}   (new grants: commitments only)")

    title("A regulator registers three institutions' signing keys on chain.")
    hospital = _Institution(ledger, "General Hospital", InstitutionKind.HOSPITAL)
    clinic = _Institution(ledger, "City Clinic", InstitutionKind.HOSPITAL)
    pharmacy = _Institution(ledger, "Corner Pharmacy", InstitutionKind.PHARMACY)
    insurer = _Institution(ledger, "Health Insurer", InstitutionKind.INSURER)
    for inst in (hospital, clinic, pharmacy, insurer):
        echo(f"   {inst.name:<17} {inst.kind.name.lower():<9} {inst.address}")

    title("Alice, a patient with a wallet and no ether, lets Corner Pharmacy read her record.")
    alice: LocalAccount = Account.create()
    record = record_ref(hospital.ref_key, "MRN-000123")
    echo(f"   Alice's wallet: {alice.address}")
    echo(f"   her record at the hospital, as the ledger sees it: {_short(record)} (an HMAC,")
    echo("   never the hospital's own record number)")
    domain = ledger.consent_v2_domain
    if domain is None:
        raise RuntimeError("the demo runs on a deployment with consent version 2")
    # Her wallet derives every grant's revocation secret from one signature of hers.
    key_message = revocation_key_typed_data(domain, alice.address)
    root = revocation_root(
        bytes(Account.sign_typed_data(alice.key, full_message=key_message).signature)
    )
    now = ledger.chain.latest_timestamp()
    unsigned = new_grant(
        root=root, patient=alice.address, grantee=pharmacy.address, record_ref=record,
        purposes=[Purpose.TREATMENT], not_before=now - 60, expires_at=now + 30 * 86400,
        deadline=now + 600, now=now,
    )  # fmt: skip
    signed_grant = unsigned.signed(
        bytes(
            Account.sign_typed_data(alice.key, full_message=unsigned.typed_data(domain)).signature
        )
    )
    grant, _new = ledger.accept_grant_v2(signed_grant)
    ledger.commit_grants_now()
    echo("   she signs an EIP-712 grant; the service keeps it and commits only a salted hash")
    echo(f"   of it on chain: grant {_short(grant.stored.commitment)} (no name, no institution)")

    title("Institutions sign what they do; the ledger checks and logs each event.")
    # Events happen after the institutions' registration and Alice's grant (the in-process
    # chain may run a few seconds ahead of the wall clock after a burst of transactions).
    t = max(int(time.time()), ledger.chain.latest_timestamp())
    dr, ph = staff_ref(hospital.ref_key, "dr-lee"), staff_ref(pharmacy.ref_key, "ph-kim")
    create = RecordAccess(
        eventId=os.urandom(32), recordRef=record, custodian=hospital.address,
        patient=alice.address, institution=hospital.address, actor=dr, action=Action.CREATE,
        purpose=Purpose.TREATMENT, grantId=0, reasonHash=bytes(32), occurredAt=t,
    )  # fmt: skip
    rx = PrescriptionIssued(
        eventId=os.urandom(32), recordRef=record, patient=alice.address,
        institution=hospital.address, prescriber=dr, contentHash=_h("amoxicillin 500mg"),
        fills=1, validUntil=t + 14 * 86400, occurredAt=t + 1,
    )  # fmt: skip
    read = RecordAccess(
        eventId=os.urandom(32), recordRef=record, custodian=hospital.address,
        patient=alice.address, institution=pharmacy.address, actor=ph, action=Action.READ,
        purpose=Purpose.TREATMENT, grantId=grant.grant_id, reasonHash=bytes(32),
        occurredAt=t + 2,
    )  # fmt: skip
    fill = PrescriptionDispensed(
        eventId=os.urandom(32), prescriptionId=rx.eventId, patient=alice.address,
        institution=pharmacy.address, pharmacist=ph, fillNumber=1, contentHash=_h("box 1"),
        occurredAt=t + 3,
    )  # fmt: skip
    claim = InsuranceClaim(
        eventId=os.urandom(32), serviceRef=fill.eventId, patient=alice.address,
        institution=pharmacy.address, insurer=insurer.address, amount=42_00,
        contentHash=_h("invoice 881"), occurredAt=t + 4,
    )  # fmt: skip
    paid = InsurancePayment(
        eventId=os.urandom(32), claimId=claim.eventId, patient=alice.address,
        institution=insurer.address, payee=pharmacy.address, amount=38_00,
        contentHash=_h("remittance 17"), occurredAt=t + 5,
    )  # fmt: skip
    emergency = RecordAccess(
        eventId=os.urandom(32), recordRef=record, custodian=hospital.address,
        patient=alice.address, institution=clinic.address, actor=staff_ref(clinic.ref_key, "er"),
        action=Action.READ, purpose=Purpose.TREATMENT, grantId=0,
        reasonHash=_h("unconscious patient in the ER"), occurredAt=t + 6,
    )  # fmt: skip
    signed = [
        (hospital, create, "creates the record"),
        (hospital, rx, "prescribes (1 fill)"),
        (pharmacy, read, "reads it under Alice's grant"),
        (pharmacy, fill, "dispenses fill 1"),
        (pharmacy, claim, "claims 42.00 from the insurer"),
        (insurer, paid, "pays 38.00"),
        (clinic, emergency, "break-glass read, with a reason"),
    ]
    receipts = ledger.submit([inst.sign(event) for inst, event, _ in signed])
    for (inst, _event, what), receipt in zip(signed, receipts, strict=True):
        echo(f"   leaf {receipt.leaf_index}: {inst.name} {what:<32} consent: {receipt.consent}")
    anchor_by = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(receipts[0].anchor_by))
    echo(f"   each answer is a receipt signed by the operator, promising anchoring by {anchor_by}")

    title("What the ledger refuses, and why (nothing of a refused batch is stored).")
    second_fill = {**fill.model_dump(), "eventId": os.urandom(32), "fillNumber": 2}
    second_payment = {**paid.model_dump(), "eventId": os.urandom(32)}
    pharmacy_rx = {**rx.model_dump(), "eventId": os.urandom(32), "institution": pharmacy.address}
    attempts: list[tuple[_Institution, EventBase, str]] = [
        (
            pharmacy,
            PrescriptionDispensed(**second_fill),
            "a second fill of a 1-fill prescription (the pharmacy may not see the hospital's "
            "prescription, so it is not told which of its facts the fill contradicts)",
        ),
        (insurer, InsurancePayment(**second_payment), "paying the same claim twice"),
        (pharmacy, PrescriptionIssued(**pharmacy_rx), "a pharmacy prescribing"),
    ]
    for inst, event, what in attempts:
        try:
            ledger.submit([inst.sign(event)])
            echo(f"   accepted?! {what}")
        except BatchRejected as exc:
            reason = exc.diagnostics()["errors"][0]
            echo(f"   refused {what}: [{reason['code']}] {reason['detail']}")

    title("Alice revokes her grant; a later read by the pharmacy is recorded, and flagged.")
    grant = ledger.grant_v2(grant.grant_id) or grant
    ledger.revoke_v2(grant, revocation_secret(root, signed_grant.salt))
    late = RecordAccess(**{**read.model_dump(), "eventId": os.urandom(32),
                           "occurredAt": ledger.chain.latest_timestamp() + 1})  # fmt: skip
    receipt = ledger.submit([pharmacy.sign(late)])[0]
    who = "Corner Pharmacy reads again"
    echo(f"   leaf {receipt.leaf_index}: {who:<50} consent: {receipt.consent}")

    title("The operator anchors a checkpoint; the contract checks it extends the last one.")
    ledger.anchor_now()
    ledger.anchor_now()
    latest = ledger.chain.latest_checkpoint()
    assert latest is not None
    row = ledger.checkpoints()[-1]
    echo(f"   checkpoint: {latest.tree_size} events, root {_short(latest.root_hash)}, "
         f"block {latest.block_number}, status {row.status}")  # fmt: skip

    title("A regulator verifies the record's trail against the root read from the chain.")
    trail = ledger.trail(record)
    for view in trail:
        findings = verify_bundle(
            view.bundle, domain=ledger.domain, trusted_size=latest.tree_size,
            trusted_root=latest.root_hash, operator=ledger.operator.address,
        )  # fmt: skip
        verdict = "ok" if not findings else ", ".join(f.code for f in findings)
        flag = {"emergency": "  <- for review", "not-covered:revoked": "  <- consent violation"}
        echo(f"   leaf {view.bundle.leafIndex}: {view.event_type:<22} proof {verdict:<4} "
             f"consent {view.consent}{flag.get(view.consent, '')}")  # fmt: skip

    title("Someone edits the database behind the service's back: the paid amount.")
    with ledger.store.write() as connection:
        connection.execute(
            text("UPDATE events SET body = replace(body, '3800', '9800') WHERE event_id = :id"),
            {"id": paid.eventId},
        )
    view = ledger.event(paid.eventId)
    findings = verify_bundle(
        view.bundle, domain=ledger.domain, trusted_size=latest.tree_size,
        trusted_root=latest.root_hash,
    )  # fmt: skip
    for finding in findings:
        echo(f"   detected: [{finding.code}] {finding.detail}")
    echo("")
    echo("That is medtrail: signed, logged, anchored, verifiable by anyone holding the chain.")
