"""Consent signatures, made locally: ``Grant``, ``Revoke`` and ``IncreaseNonce`` (EIP-712).

The patient's wallet signs what the ConsentRegistry contract verifies, built from the
service's typed-data definitions (``GET /v1/typed-data``, see
:func:`ledger.events.typed_data_definitions`) and signed with eth-account
(``LocalAccount.sign_typed_data(full_message=...)``), so that the same documents can be
signed by MetaMask, ethers or viem. The service then relays the signature on chain (the
patient pays no gas).

The served definitions are checked, not trusted blindly: the domain must be
``medtrail``/``1`` (and the expected chain and contract, when the caller pins them), its
separator must match the served one, and every struct's ``encodeType`` (and served
``typeHash``) must be exactly the one the contract hashes — a mismatch would only produce
signatures the chain refuses, so it is reported (:class:`TypedDataMismatch`) instead.

``IncreaseNonce(address patient,uint256 newNonce,uint256 nonce,uint256 deadline)`` is
verified by the contract (``increaseNonceBySig``: cancel every outstanding signature by
moving the nonce forward) but not yet served by ``ledger.events``; it is taken from the
served definitions when present, else from :data:`INCREASE_NONCE_TYPE`.

Requests the chain would refuse are refused here first (:class:`InvalidConsentRequest`): a
grant is judged by :func:`ledger.events.grant_refusal`, the contract's own checks (no
purposes, a validity window ``[notBefore, expiresAt)`` that is empty or reversed, an expiry
not in the future), and the patient is told what the chain would answer
(:data:`ledger.codes.REVERTS`; ``error`` names the custom error). The wallet also refuses what
the chain cannot see: unknown purpose bits, a zero or self grantee, a deadline that is not
after now (a signature whose deadline is its own second is dead before it can be relayed),
a nonce increase that does not move the nonce forward past the one the signature itself
uses.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from eth_account.signers.local import LocalAccount

from ledger.consent import (
    CONSENT_VERSION,
    GRANT_V2,
    REVOCATION_KEY,
    GrantTermsError,
    SignedGrant,
    consent_domain_v2,
    new_grant,
    revocation_hash,
    revocation_key_typed_data,
    revocation_root,
    revocation_secret,
)
from ledger.eip712 import (
    DOMAIN_FIELDS,
    Domain,
    StructType,
    digest,
    parse_address,
    recover,
    to_checksum_address,
    typed_data_message,
)
from ledger.errors import LedgerError
from ledger.events import (
    DOMAIN_NAME,
    DOMAIN_VERSION,
    GRANT,
    REVOKE,
    Purpose,
    grant_refusal,
    purposes_from_mask,
    purposes_mask,
)
from wallets.errors import InvalidConsentRequest, TypedDataMismatch, WalletError

__all__ = [
    "ALL_RECORDS",
    "CONTRACT_TYPES",
    "INCREASE_NONCE",
    "INCREASE_NONCE_TYPE",
    "ConsentTypedData",
    "SignedConsent",
    "consent_v2_domain",
    "grant_secret",
    "sign_grant",
    "sign_increase_nonce",
    "sign_revoke",
    "struct_from_type_string",
]

#: The ConsentRegistry's ``INCREASE_NONCE_TYPEHASH`` preimage.
INCREASE_NONCE_TYPE: Final = (
    "IncreaseNonce(address patient,uint256 newNonce,uint256 nonce,uint256 deadline)"
)
#: ``encodeType`` of every struct the ConsentRegistry verifies (its ``*_TYPEHASH``).
CONTRACT_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "Grant": GRANT.type_string,
        "Revoke": REVOKE.type_string,
        "IncreaseNonce": INCREASE_NONCE_TYPE,
    }
)
#: ``recordRef`` of a grant that covers all the patient's records.
ALL_RECORDS: Final = bytes(32)
_UINT64_MAX: Final = (1 << 64) - 1
_UINT256_MAX: Final = (1 << 256) - 1
_CONSENT_DOMAIN_KEY: Final = "consentRegistry"


def struct_from_type_string(type_string: str) -> StructType:
    """A flat :class:`StructType` from an ``encodeType`` string such as
    ``IncreaseNonce(address patient,uint256 newNonce,...)``."""
    name, paren, body = type_string.partition("(")
    if not paren or not body.endswith(")") or not body[:-1]:
        raise ValueError(f"not an encodeType string: {type_string!r}")
    fields: list[tuple[str, str]] = []
    for member in body[:-1].split(","):
        parts = member.split(" ")
        if len(parts) != 2:
            raise ValueError(f"not an encodeType member: {member!r}")
        sol_type, field_name = parts
        fields.append((field_name, sol_type))
    struct = StructType(name, fields)
    if struct.type_string != type_string:
        raise ValueError(f"not a canonical encodeType string: {type_string!r}")
    return struct


INCREASE_NONCE: Final = struct_from_type_string(INCREASE_NONCE_TYPE)


# --------------------------------------------------------------------------- definitions


def _mismatch(detail: str, **context: Any) -> TypedDataMismatch:
    return TypedDataMismatch(f"the service's typed-data definitions: {detail}", **context)


def _struct_from_served(name: str, members: Any) -> StructType:
    if not isinstance(members, list) or not members:
        raise _mismatch(f"types.{name} must be a non-empty list")
    fields: list[tuple[str, str]] = []
    for member in members:
        if (
            not isinstance(member, Mapping)
            or set(member) != {"name", "type"}
            or not isinstance(member["name"], str)
            or not isinstance(member["type"], str)
        ):
            raise _mismatch(f"types.{name} members must be {{name, type}} objects")
        fields.append((member["name"], member["type"]))
    try:
        struct = StructType(name, fields)
    except ValueError as exc:
        raise _mismatch(f"types.{name}: {exc}") from None
    expected = CONTRACT_TYPES[name]
    if struct.type_string != expected:
        raise _mismatch(
            f"{name} is {struct.type_string!r}, the contract verifies {expected!r}",
            served=struct.type_string,
            expected=expected,
        )
    return struct


@dataclass(frozen=True)
class ConsentTypedData:
    """The consent domain and struct types, checked, ready to build and hash messages."""

    domain: Domain
    structs: Mapping[str, StructType]
    #: Whether ``IncreaseNonce`` came from the served definitions (else the built-in one).
    increase_nonce_served: bool = False

    @classmethod
    def from_definitions(
        cls,
        definitions: Mapping[str, Any],
        *,
        chain_id: int | None = None,
        consent_registry: str | None = None,
    ) -> ConsentTypedData:
        """Check and adopt the document served at ``GET /v1/typed-data``.

        ``chain_id`` and ``consent_registry``, when given (e.g. remembered from the first
        use), must match the served domain.
        """
        if not isinstance(definitions, Mapping):
            raise _mismatch("not a JSON object")
        domains = definitions.get("domains")
        types = definitions.get("types")
        if not isinstance(domains, Mapping) or not isinstance(types, Mapping):
            raise _mismatch("'domains' and 'types' objects are required")
        served_domain = domains.get(_CONSENT_DOMAIN_KEY)
        if not isinstance(served_domain, Mapping) or set(served_domain) != {
            "name",
            "version",
            "chainId",
            "verifyingContract",
        }:
            raise _mismatch("domains.consentRegistry must have exactly the four EIP-712 fields")
        expected_domain_type = [{"name": f, "type": t} for f, t in DOMAIN_FIELDS]
        if types.get("EIP712Domain") != expected_domain_type:
            raise _mismatch("types.EIP712Domain is not (name, version, chainId, verifyingContract)")
        if served_domain["name"] != DOMAIN_NAME or served_domain["version"] != DOMAIN_VERSION:
            raise _mismatch(
                f"the domain is {served_domain['name']!r} version {served_domain['version']!r},"
                f" expected {DOMAIN_NAME!r} version {DOMAIN_VERSION!r}"
            )
        served_chain_id = served_domain["chainId"]
        if type(served_chain_id) is not int:
            raise _mismatch("domains.consentRegistry.chainId must be an integer")
        try:
            domain = Domain(
                DOMAIN_NAME, DOMAIN_VERSION, served_chain_id, served_domain["verifyingContract"]
            )
        except LedgerError as exc:
            raise _mismatch(f"domains.consentRegistry: {exc}") from None
        if chain_id is not None and domain.chain_id != chain_id:
            raise _mismatch(
                f"chain {domain.chain_id}, expected {chain_id}", chain_id=domain.chain_id
            )
        if consent_registry is not None and domain.verifying_contract != _checksum(
            consent_registry
        ):
            raise _mismatch(
                f"ConsentRegistry {domain.verifying_contract}, expected"
                f" {_checksum(consent_registry)}",
                verifying_contract=domain.verifying_contract,
            )
        separators = definitions.get("domainSeparators")
        if (
            isinstance(separators, Mapping)
            and _CONSENT_DOMAIN_KEY in separators
            and separators[_CONSENT_DOMAIN_KEY] != "0x" + domain.separator.hex()
        ):
            raise _mismatch("the served consentRegistry domain separator is wrong")

        structs: dict[str, StructType] = {}
        for name in ("Grant", "Revoke"):
            if name not in types:
                raise _mismatch(f"types.{name} is missing")
            structs[name] = _struct_from_served(name, types[name])
        served_increase = "IncreaseNonce" in types
        structs["IncreaseNonce"] = (
            _struct_from_served("IncreaseNonce", types["IncreaseNonce"])
            if served_increase
            else INCREASE_NONCE
        )
        primary = definitions.get("primaryTypes")
        if isinstance(primary, Mapping):
            for name, struct in structs.items():
                entry = primary.get(name)
                if entry is None:
                    continue
                if not isinstance(entry, Mapping) or (
                    entry.get("domain", _CONSENT_DOMAIN_KEY) != _CONSENT_DOMAIN_KEY
                    or entry.get("encodeType", struct.type_string) != struct.type_string
                    or entry.get("typeHash", "0x" + struct.type_hash.hex())
                    != "0x" + struct.type_hash.hex()
                ):
                    raise _mismatch(f"primaryTypes.{name} disagrees with types.{name}")
        return cls(domain, MappingProxyType(structs), served_increase)

    def document(self, primary_type: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """The full typed-data document (``eth_signTypedData_v4`` / eth-account)."""
        return typed_data_message(self.domain, self._struct(primary_type), values)

    def digest(self, primary_type: str, values: Mapping[str, Any]) -> bytes:
        """The EIP-712 digest the contract recovers the patient from."""
        return digest(self.domain.separator, self._struct(primary_type).hash_struct(values))

    def _struct(self, primary_type: str) -> StructType:
        try:
            return self.structs[primary_type]
        except KeyError:
            raise ValueError(f"not a consent type: {primary_type!r}") from None


def _checksum(address: str) -> str:
    try:
        return to_checksum_address(address)
    except LedgerError as exc:
        raise _mismatch(f"expected ConsentRegistry: {exc}") from None


# --------------------------------------------------------------------------- signing


@dataclass(frozen=True)
class SignedConsent:
    """A signed consent request, ready to relay."""

    primary_type: str
    #: The typed-data ``message``: checksummed addresses, 0x-hex bytes, ints.
    message: Mapping[str, Any]
    #: The full typed-data document that was signed.
    typed_data: Mapping[str, Any]
    digest: bytes
    #: 65 bytes ``r ‖ s ‖ v``, ``v`` in {27, 28}, low ``s``.
    signature: bytes
    signer: str

    def as_json(self) -> dict[str, Any]:
        """``primaryType``, ``message``, ``signature``, ``digest`` and ``signer``."""
        return {
            "primaryType": self.primary_type,
            "message": dict(self.message),
            "signature": "0x" + self.signature.hex(),
            "digest": "0x" + self.digest.hex(),
            "signer": self.signer,
        }


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else now


def _uint(value: Any, what: str, limit: int) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise InvalidConsentRequest(f"{what} must be an integer in 0 .. {limit}, got {value!r}")
    return int(value)


def _deadline(value: Any, now: int) -> int:
    deadline = _uint(value, "the signature deadline", _UINT256_MAX)
    if deadline <= now:
        raise InvalidConsentRequest(
            f"the signature deadline {deadline} has passed (now {now})", deadline=deadline
        )
    return deadline


def _sign(
    account: LocalAccount, typed: ConsentTypedData, primary_type: str, values: dict[str, Any]
) -> SignedConsent:
    document = typed.document(primary_type, values)
    expected_digest = typed.digest(primary_type, values)
    signed = account.sign_typed_data(full_message=document)
    signature = bytes(signed.signature)
    # Self-check with the strict recovery the service and the contract use (low s, v 27/28).
    if bytes(signed.message_hash) != expected_digest or (
        recover(expected_digest, signature) != account.address
    ):  # pragma: no cover - a disagreement between eth-account and ledger.eip712
        raise WalletError("the typed-data signature does not verify; refusing to use it")
    return SignedConsent(
        primary_type=primary_type,
        message=MappingProxyType(document["message"]),
        typed_data=MappingProxyType(document),
        digest=expected_digest,
        signature=signature,
        signer=account.address,
    )


def sign_grant(
    account: LocalAccount,
    typed: ConsentTypedData,
    *,
    grantee: str | bytes,
    purposes: int | Iterable[Purpose | int],
    expires_at: int,
    nonce: int,
    deadline: int,
    record_ref: bytes | str | None = None,
    not_before: int | None = None,
    now: int | None = None,
) -> SignedConsent:
    """Sign a ``Grant``: ``grantee`` may access ``record_ref`` (None: all the patient's
    records) for ``purposes`` from ``not_before`` (default: now) until ``expires_at``
    (unix seconds). ``nonce`` is the patient's current ConsentRegistry nonce."""
    current = _now(now)
    try:
        grantee_raw = parse_address(grantee, "grantee")
        mask = purposes if isinstance(purposes, int) else purposes_mask(purposes)
        if isinstance(mask, bool):
            raise InvalidConsentRequest("purposes must be a bitmask or a list of purposes")
        purposes_from_mask(mask)
    except LedgerError as exc:
        raise InvalidConsentRequest(exc.detail) from None
    if grantee_raw == bytes(20):
        raise InvalidConsentRequest("the grantee must not be the zero address")
    grantee_address = to_checksum_address(grantee_raw)
    if grantee_address == account.address:
        raise InvalidConsentRequest("a patient cannot grant access to themselves")
    start = current if not_before is None else not_before
    start = _uint(start, "notBefore", _UINT64_MAX)
    expiry = _uint(expires_at, "expiresAt", _UINT64_MAX)
    valid_until = _deadline(deadline, current)
    refusal = grant_refusal(
        purposes=mask, not_before=start, expires_at=expiry, deadline=valid_until, now=current
    )
    if refusal is not None:
        raise InvalidConsentRequest(
            f"the chain would refuse this grant: {refusal.detail}", error=refusal.error
        )
    ref: bytes | str = ALL_RECORDS if record_ref is None else record_ref
    values = {
        "patient": account.address,
        "grantee": grantee_address,
        "recordRef": ref,
        "purposes": mask,
        "notBefore": start,
        "expiresAt": expiry,
        "nonce": _uint(nonce, "the nonce", _UINT256_MAX),
        "deadline": valid_until,
    }
    try:
        return _sign(account, typed, "Grant", values)
    except LedgerError as exc:  # e.g. a malformed recordRef
        raise InvalidConsentRequest(exc.detail) from None


def sign_revoke(
    account: LocalAccount,
    typed: ConsentTypedData,
    *,
    grant_id: int,
    nonce: int,
    deadline: int,
    now: int | None = None,
) -> SignedConsent:
    """Sign a ``Revoke`` of grant ``grant_id``."""
    current = _now(now)
    if type(grant_id) is not int or not 0 < grant_id <= _UINT256_MAX:
        raise InvalidConsentRequest(f"a grant id is a positive integer, got {grant_id!r}")
    values = {
        "patient": account.address,
        "grantId": grant_id,
        "nonce": _uint(nonce, "the nonce", _UINT256_MAX),
        "deadline": _deadline(deadline, current),
    }
    return _sign(account, typed, "Revoke", values)


def sign_increase_nonce(
    account: LocalAccount,
    typed: ConsentTypedData,
    *,
    new_nonce: int,
    nonce: int,
    deadline: int,
    now: int | None = None,
) -> SignedConsent:
    """Sign an ``IncreaseNonce``: every outstanding signature with a nonce below
    ``new_nonce`` becomes unusable. ``nonce`` is the current one (this signature uses it);
    ``new_nonce`` must be above it — ``nonce + 1`` cancels nothing but this very request."""
    current = _now(now)
    used = _uint(nonce, "the nonce", _UINT256_MAX)
    target = _uint(new_nonce, "the new nonce", _UINT256_MAX)
    if target <= used:
        raise InvalidConsentRequest(
            f"the new nonce must be above the current nonce {used}, got {target}",
            new_nonce=target,
        )
    values = {
        "patient": account.address,
        "newNonce": target,
        "nonce": used,
        "deadline": _deadline(deadline, current),
    }
    return _sign(account, typed, "IncreaseNonce", values)


# --------------------------------------------------------------------------- consent version 2


def revocation_root_v2(account: LocalAccount, domain: Domain) -> bytes:
    """The patient's version-2 revocation root (:func:`ledger.consent.revocation_root`): the
    hash of their signature over ``RevocationKey(address patient)`` in the ConsentRegistryV2's
    domain. eth-account signs deterministically (RFC 6979), as MetaMask does, so one account
    derives the same root again on any device: no secret to keep beside the key."""
    message = revocation_key_typed_data(domain, account.address)
    return revocation_root(bytes(account.sign_typed_data(full_message=message).signature))


def sign_grant_v2(
    account: LocalAccount,
    domain: Domain,
    *,
    grantee: str,
    record_ref: bytes | None,
    purposes: Iterable[Purpose | int],
    expires_at: int,
    not_before: int | None = None,
    deadline: int | None = None,
    now: int | None = None,
) -> SignedGrant:
    """A version-2 grant (:class:`ledger.consent.SignedGrant`) signed by ``account``: a fresh
    salt, the revocation hash from :func:`revocation_root_v2`, a commitment deadline an hour
    ahead by default. Bad terms raise :class:`InvalidConsentRequest`."""
    moment = _now(now)
    try:
        grantee_address = to_checksum_address(parse_address(grantee, "grantee"))
    except LedgerError as exc:
        raise InvalidConsentRequest(exc.detail) from None
    if grantee_address in (to_checksum_address(bytes(20)), account.address):
        raise InvalidConsentRequest("the grantee must be an institution, not zero nor yourself")
    try:
        grant = new_grant(
            root=revocation_root_v2(account, domain),
            patient=account.address,
            grantee=grantee,
            record_ref=bytes(32) if record_ref is None else record_ref,
            purposes=list(purposes),
            not_before=moment if not_before is None else not_before,
            expires_at=expires_at,
            deadline=moment + 3600 if deadline is None else deadline,
            now=moment,
        )
    except (GrantTermsError, LedgerError) as exc:
        raise InvalidConsentRequest(exc.detail) from exc
    return grant.sign(domain, bytes(account.key))


def grant_secret(
    account: LocalAccount,
    domain: Domain,
    grant: SignedGrant,
    *,
    account_option: str = "--account",
    registry_hint: str | None = None,
) -> bytes:
    """The revocation secret of ``account``'s ``grant`` in ``domain``, checked against the
    hash the grant carries (:class:`InvalidConsentRequest` for another patient's grant, or one
    made for another registry or chain: another secret would revoke nothing)."""
    if grant.patient != account.address:
        raise InvalidConsentRequest(
            f"the grant is {grant.patient}'s, not {account.address}'s (pass {account_option})"
        )
    secret = revocation_secret_v2(account, domain, grant.salt)
    if revocation_hash(secret) != grant.revocation_hash:
        hint = registry_hint or (f"than {domain.verifying_contract} on chain {domain.chain_id}")
        raise InvalidConsentRequest(
            "this account derives another revocation secret for this grant: it was made for "
            f"another ConsentRegistryV2 or chain {hint}"
        )
    return secret


def revocation_secret_v2(account: LocalAccount, domain: Domain, salt: bytes) -> bytes:
    """The secret that revokes ``account``'s version-2 grant with ``salt``: send it to
    ``ConsentRegistryV2.revoke`` from any address (or hand it to any relayer)."""
    return revocation_secret(revocation_root_v2(account, domain), salt)


#: Where ``GET /v1/typed-data`` serves the version-2 consent domain and types.
_CONSENT_V2_KEY: Final = "consentV2"


def consent_v2_domain(
    definitions: Mapping[str, Any], *, chain_id: int, registry: str | None = None
) -> Domain | None:
    """The ConsentRegistryV2 domain of the served typed data (``consentV2``), checked: name
    ``medtrail`` version ``2`` on ``chain_id`` (the trusted deployment's), at ``registry``
    when the wallet knows it, and ``Grant`` and ``RevocationKey`` exactly as the contract and
    :mod:`ledger.consent` hash them. None when the deployment has no version 2."""
    served = definitions.get(_CONSENT_V2_KEY) if isinstance(definitions, Mapping) else None
    if served is None:
        return None
    if not isinstance(served, Mapping):
        raise _mismatch("consentV2 must be an object")
    domain_json, types = served.get("domain"), served.get("types")
    if not isinstance(domain_json, Mapping) or not isinstance(types, Mapping):
        raise _mismatch("consentV2 needs 'domain' and 'types' objects")
    if set(domain_json) != {"name", "version", "chainId", "verifyingContract"}:
        raise _mismatch("consentV2.domain must have exactly the four EIP-712 fields")
    if domain_json["name"] != DOMAIN_NAME or domain_json["version"] != CONSENT_VERSION:
        raise _mismatch(
            f"consentV2 is {domain_json['name']!r} version {domain_json['version']!r},"
            f" expected {DOMAIN_NAME!r} version {CONSENT_VERSION!r}"
        )
    if type(domain_json["chainId"]) is not int or domain_json["chainId"] != chain_id:
        raise _mismatch(f"consentV2 is on chain {domain_json['chainId']!r}, expected {chain_id}")
    try:
        domain = consent_domain_v2(chain_id, str(domain_json["verifyingContract"]))
    except (LedgerError, ValueError) as exc:
        raise _mismatch(f"consentV2.domain.verifyingContract: {exc}") from None
    if registry is not None and domain.verifying_contract != _checksum(registry):
        raise _mismatch(
            f"ConsentRegistryV2 {domain.verifying_contract}, expected {_checksum(registry)}",
            verifying_contract=domain.verifying_contract,
        )
    expected_domain_type = [{"name": f, "type": t} for f, t in DOMAIN_FIELDS]
    if types.get("EIP712Domain") != expected_domain_type:
        raise _mismatch("consentV2.types.EIP712Domain is not (name, version, chainId, ...)")
    for struct in (GRANT_V2, REVOCATION_KEY):
        if types.get(struct.name) != struct.types_json():
            raise _mismatch(
                f"consentV2.types.{struct.name} is not {struct.type_string!r}, the struct the"
                " ConsentRegistryV2 verifies"
            )
    return domain
