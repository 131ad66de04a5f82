"""Consent version 2: grants signed off chain, only salted commitments on chain (pure, no I/O).

What the chain learns of a grant in version 1 (``GrantCreated``: the patient, the grantee, the
record reference, the purposes, the window) links a patient to an institution. Version 2
(``ConsentRegistryV2``, docs/upgrading.md) keeps instead, each with its block time:

* the **commitment** to a grant the patient signed (EIP-712, domain "medtrail" version "2",
  verifyingContract = the ConsentRegistryV2): ``keccak256(digest ‖ salt)``. The 32-byte random
  salt inside the grant makes the commitment unguessable from any dictionary of patients,
  institutions, records and purposes, and two grants of one patient unlinkable;
* a **revocation mark** keyed by ``keccak256(secret)``, set by whoever presents ``secret``. The
  patient derives each grant's secret from one signature of theirs (:func:`revocation_root`,
  deterministic for RFC 6979 keys such as eth-account's and MetaMask's) and the grant's salt;
  its hash is inside the signed grant, so the operator can neither fake nor hide it.

The grant's id — what a ``RecordAccess`` cites in ``grantId`` — is the commitment as a number.
Whether a signed grant covered an access at time t is decided by the contract's
``grantStatusAt`` view, the one rule (it checks the signature as the chain would, ERC-1271
contract wallets included): :mod:`ledger.chain.consent` asks it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final

from ledger.eip712 import (
    DOMAIN_FIELDS,
    Domain,
    StructType,
    digest,
    keccak,
    parse_address,
    sign_digest,
    to_checksum_address,
    typed_data_message,
)
from ledger.errors import LedgerError
from ledger.events import DOMAIN_NAME, Purpose, purposes_from_mask, purposes_mask

__all__ = [
    "CONSENT_VERSION",
    "GRANT_V2",
    "MAX_GRANT_SECONDS",
    "REVOCATION_KEY",
    "GrantTermsError",
    "GrantVersionError",
    "GranteeNotActiveError",
    "SignedGrant",
    "check_terms",
    "commitment_of",
    "consent_domain_v2",
    "new_grant",
    "revocation_hash",
    "revocation_key_typed_data",
    "revocation_root",
    "revocation_secret",
    "typed_data_v2",
]

#: The EIP-712 domain version of ConsentRegistryV2.
CONSENT_VERSION: Final = "2"

#: The grant a patient signs (ConsentRegistryV2.GRANT_TYPEHASH's source string).
GRANT_V2: Final = StructType(
    "Grant",
    [
        ("patient", "address"),
        ("grantee", "address"),
        ("recordRef", "bytes32"),
        ("purposes", "uint256"),
        ("notBefore", "uint64"),
        ("expiresAt", "uint64"),
        ("deadline", "uint256"),
        ("salt", "bytes32"),
        ("revocationHash", "bytes32"),
    ],
)

#: What a patient signs once per registry to derive every revocation secret from
#: (never sent anywhere: only the hash of each derived secret is).
REVOCATION_KEY: Final = StructType("RevocationKey", [("patient", "address")])

#: The longest grant: a century (36,525 days). Longer is a typo, not a decision.
MAX_GRANT_SECONDS: Final = 36_525 * 86_400


class GrantTermsError(LedgerError):
    """A grant's terms cannot make a grant that could ever cover an access."""

    code = "invalid-grant-terms"
    status = 422


class GranteeNotActiveError(LedgerError):
    """The grantee is not an active registered institution: the grant is not kept."""

    code = "grantee-not-active"


class GrantVersionError(LedgerError):
    """A grant of the consent version the deployment does not take for new grants."""

    code = "grant-version-refused"


def consent_domain_v2(chain_id: int, registry: str) -> Domain:
    """The domain of version-2 grants: verifyingContract = the ConsentRegistryV2."""
    return Domain(DOMAIN_NAME, CONSENT_VERSION, chain_id, registry)


def typed_data_v2(domain: Domain) -> dict[str, Any]:
    """``consentV2`` of ``GET /v1/typed-data``: the domain, and the types a wallet signs
    (``Grant``; ``RevocationKey``, from which it derives its revocation secrets)."""
    return {
        "domain": domain.as_json(),
        "types": {
            "EIP712Domain": [{"name": f, "type": t} for f, t in DOMAIN_FIELDS],
            GRANT_V2.name: GRANT_V2.types_json(),
            REVOCATION_KEY.name: REVOCATION_KEY.types_json(),
        },
    }


@dataclass(frozen=True)
class SignedGrant:
    """A version-2 grant and the patient's signature over it.

    Only its commitment goes on chain; the grant itself goes to the grantee and the ledger and
    is shown only to those who may see it (the patient, the grantee, regulators).
    """

    patient: str
    grantee: str
    record_ref: bytes
    purposes: int
    not_before: int
    expires_at: int
    deadline: int
    salt: bytes
    revocation_hash: bytes
    signature: bytes = b""

    def values(self) -> tuple[Any, ...]:
        """The struct's values in field order (also the contract's ``Grant`` tuple)."""
        return (
            self.patient,
            self.grantee,
            self.record_ref,
            self.purposes,
            self.not_before,
            self.expires_at,
            self.deadline,
            self.salt,
            self.revocation_hash,
        )

    def digest(self, domain: Domain) -> bytes:
        """The EIP-712 digest the patient signs."""
        return digest(domain.separator, GRANT_V2.hash_struct(self.values()))

    def commitment(self, domain: Domain) -> bytes:
        """What goes on chain: ``keccak256(abi.encode(digest, salt))``."""
        return commitment_of(self.digest(domain), self.salt)

    def grant_id(self, domain: Domain) -> int:
        """The id an access cites: the commitment as a number."""
        return int.from_bytes(self.commitment(domain), "big")

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        """The full typed-data document (``eth_signTypedData_v4`` / eth-account)."""
        return typed_data_message(domain, GRANT_V2, self.values())

    def signed(self, signature: bytes) -> SignedGrant:
        """This grant with ``signature``."""
        return replace(self, signature=signature)

    def sign(self, domain: Domain, private_key: bytes) -> SignedGrant:
        """This grant signed with a 32-byte secp256k1 key (the patient's)."""
        return self.signed(sign_digest(self.digest(domain), private_key))

    def as_json(self) -> dict[str, Any]:
        """The grant as JSON (hex bytes, checksummed addresses)."""
        message = GRANT_V2.message_json(self.values())
        return {**message, "signature": "0x" + self.signature.hex()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignedGrant:
        """A grant from :meth:`as_json`'s shape (:class:`GrantTermsError` if malformed)."""
        try:
            canonical = GRANT_V2.canonical({k: v for k, v in data.items() if k != "signature"})
            signature = bytes.fromhex(str(data.get("signature", "0x"))[2:])
        except (LedgerError, ValueError, TypeError) as exc:
            raise GrantTermsError(f"not a version-2 grant: {exc}") from exc
        patient, grantee, record_ref, purposes, not_before, expires_at, deadline, salt, rh = (
            canonical
        )
        return cls(
            patient=to_checksum_address(patient),
            grantee=to_checksum_address(grantee),
            record_ref=record_ref,
            purposes=purposes,
            not_before=not_before,
            expires_at=expires_at,
            deadline=deadline,
            salt=salt,
            revocation_hash=rh,
            signature=signature,
        )


def commitment_of(grant_digest: bytes, salt: bytes) -> bytes:
    """``keccak256(abi.encode(bytes32 digest, bytes32 salt))``."""
    if len(grant_digest) != 32 or len(salt) != 32:
        raise ValueError("digest and salt must be 32 bytes each")
    return keccak(grant_digest + salt)


# --------------------------------------------------------------------------- revocation


def revocation_key_typed_data(domain: Domain, patient: str) -> dict[str, Any]:
    """What the patient signs once to derive their revocation secrets (any EIP-712 wallet)."""
    return typed_data_message(domain, REVOCATION_KEY, {"patient": patient})


def revocation_root(key_signature: bytes) -> bytes:
    """The patient's revocation root: the hash of their signature over
    :func:`revocation_key_typed_data`. Never leaves the wallet."""
    if len(key_signature) < 64:
        raise ValueError("a signature has at least 64 bytes")
    return keccak(b"medtrail consent revocation root" + key_signature)


def revocation_secret(root: bytes, salt: bytes) -> bytes:
    """The secret that revokes the grant with ``salt``: presenting it on chain revokes it."""
    if len(root) != 32 or len(salt) != 32:
        raise ValueError("root and salt must be 32 bytes each")
    return keccak(root + salt)


def revocation_hash(secret: bytes) -> bytes:
    """``keccak256(abi.encode(bytes32 secret))``: what the signed grant carries."""
    if len(secret) != 32:
        raise ValueError("a revocation secret is 32 bytes")
    return keccak(secret)


# --------------------------------------------------------------------------- terms


def check_terms(
    *, purposes: int, not_before: int, expires_at: int, deadline: int, now: int
) -> None:
    """Refuse terms that could never cover an access, before anything is signed:
    no purpose, an empty or inverted window, already expired, longer than
    :data:`MAX_GRANT_SECONDS`, or a commitment deadline already past."""
    if purposes == 0:
        raise GrantTermsError("a grant must cover at least one purpose")
    purposes_from_mask(purposes)  # unknown bits
    if not_before >= expires_at:
        raise GrantTermsError(
            f"the window is empty: notBefore {not_before} is not before expiresAt {expires_at}"
        )
    if expires_at <= now:
        raise GrantTermsError(f"the grant would be expired already (expiresAt {expires_at})")
    if expires_at - max(not_before, now) > MAX_GRANT_SECONDS:
        raise GrantTermsError(
            f"a grant lasts at most {MAX_GRANT_SECONDS // 86_400} days "
            f"(asked for {(expires_at - max(not_before, now)) // 86_400})"
        )
    if deadline < now:
        raise GrantTermsError(f"the commitment deadline {deadline} has passed")


def new_grant(
    *,
    root: bytes,
    patient: str,
    grantee: str,
    record_ref: bytes,
    purposes: int | Iterable[Purpose | int],
    not_before: int,
    expires_at: int,
    deadline: int,
    now: int,
    salt: bytes | None = None,
) -> SignedGrant:
    """An unsigned version-2 grant with a fresh random salt and the revocation hash derived
    from the patient's revocation ``root`` (:class:`GrantTermsError` on bad terms)."""
    mask = purposes if isinstance(purposes, int) else purposes_mask(purposes)
    check_terms(
        purposes=mask, not_before=not_before, expires_at=expires_at, deadline=deadline, now=now
    )
    salt = secrets.token_bytes(32) if salt is None else salt
    return SignedGrant(
        patient=to_checksum_address(parse_address(patient, "patient")),
        grantee=to_checksum_address(parse_address(grantee, "grantee")),
        record_ref=record_ref,
        purposes=mask,
        not_before=not_before,
        expires_at=expires_at,
        deadline=deadline,
        salt=salt,
        revocation_hash=revocation_hash(revocation_secret(root, salt)),
    )
