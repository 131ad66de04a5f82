"""What the chain says, as plain values: checkpoints, registrations, deployments, and the
errors of reaching it.

Nothing here talks to a node, so nothing here imports web3: the service, the wallet and the
regulator's tools read the chain through :mod:`ledger.chain.reader` and share these types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ledger.eip712 import to_checksum_address
from ledger.errors import LedgerError, MalformedEventError, ProofError
from ledger.events import InstitutionKind
from ledger.fileio import atomic_write


class ChainError(LedgerError):
    """The chain could not be reached or did not answer as expected."""

    code = "chain-unavailable"
    status = 503


class DeploymentMismatch(LedgerError):
    """The chain does not hold the contracts the deployment (or the store) expects."""

    code = "deployment-mismatch"
    status = 500


class Deployment(BaseModel):
    """Where medtrail's contracts live: one format for ``GET /v1/deployment``, the file
    ``medtrail deploy`` writes, the service, the wallet and the regulator's tools.

    On the wire and in files its fields are camelCase (``chainId``, ``institutionRegistry``,
    ``auditLog``, ``consentRegistry``, ``blockNumber``, ``sourcesHash``, and
    ``consentRegistryV2`` when the deployment has consent version 2: docs/upgrading.md): the
    deployment the API serves, saved as a file, is a deployment file. A deployment without
    ``consentRegistryV2`` (every file written before it) takes version-1 grants only; its
    field is left out when written, so such a file reads and writes back unchanged. Files
    written before that in snake_case (``chain_id``…) are read too; one document mixing both
    is refused. Addresses are stored EIP-55 checksummed; ``sourcesHash`` names the contracts'
    sources (:attr:`ledger.chain.artifacts.Artifact.sources_hash`).
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    chain_id: StrictInt = Field(ge=1)
    institution_registry: str
    audit_log: str
    consent_registry: str
    block_number: StrictInt = Field(ge=0)
    sources_hash: str
    consent_registry_v2: str | None = Field(default=None, exclude_if=lambda value: value is None)

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict):
            names = set(cls.model_fields)
            aliases = {field.alias for field in cls.model_fields.values()}
            if data.keys() & names and data.keys() & aliases:
                raise ValueError(
                    "the deployment mixes snake_case and camelCase field names: use one"
                )
        return data

    @field_validator("institution_registry", "audit_log", "consent_registry", "consent_registry_v2")
    @classmethod
    def _checksum(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return to_checksum_address(value)
        except MalformedEventError as exc:
            raise ValueError(exc.detail) from None

    def trusted(self) -> TrustedDeployment:
        """The contracts to read (what a reader checks, and trusts once checked)."""
        return TrustedDeployment(
            self.chain_id,
            self.institution_registry,
            self.audit_log,
            self.consent_registry,
            self.block_number,
            self.consent_registry_v2,
        )

    def write(self, path: Path) -> None:
        """Write the deployment file atomically and durably (readable by all: it is public)."""
        atomic_write(path, self.model_dump_json(indent=2) + "\n", mode=0o644)

    @classmethod
    def read(cls, path: Path) -> Deployment:
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise DeploymentMismatch(
                f"deployment file {path} not found; run `medtrail deploy` first"
            ) from exc
        except ValidationError as exc:  # one line: its first wrong field, not a dump
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the file"
            raise DeploymentMismatch(
                f"{path} is not a medtrail deployment file (as `medtrail deploy` writes it or "
                f"GET /v1/deployment serves it): {exc.error_count()} error(s), first: {where}: "
                f"{first['msg']}"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DeploymentMismatch(f"deployment file {path} cannot be read: {exc}") from exc


@dataclass(frozen=True)
class CheckpointRoots:
    """What the AuditLog keeps for a checkpoint (``checkpointAt``): the roots of the event log
    and of its verifiable index (docs/index.md) over the first ``tree_size`` events."""

    tree_size: int
    root_hash: bytes
    index_root: bytes


@dataclass(frozen=True)
class OnChainCheckpoint(CheckpointRoots):
    """A committed checkpoint with the block that committed it: the latest (the AuditLog keeps
    its block and time), or any one read from its ``CheckpointCommitted`` log."""

    block_number: int
    timestamp: int


@dataclass(frozen=True)
class InstitutionInfo:
    """An institution's registration (``kind == NONE``: never registered)."""

    address: str
    kind: InstitutionKind
    active: bool
    registered_at: int
    name: str

    @property
    def registered(self) -> bool:
        return self.kind != InstitutionKind.NONE


@dataclass(frozen=True)
class TrustedDeployment:
    """The contracts a reader trusts, on the chain its node serves (checked by
    :meth:`ledger.chain.reader.ChainReader.connect`); ``consent_registry_v2`` None: the
    deployment has no consent version 2 (or the reader was not told of it)."""

    chain_id: int
    institution_registry: str
    audit_log: str
    consent_registry: str
    block_number: int
    consent_registry_v2: str | None = None

    def address_of(self, contract: str) -> str:
        """The address of ``contract`` (``AuditLog``, ``InstitutionRegistry``…)."""
        return {
            "InstitutionRegistry": self.institution_registry,
            "AuditLog": self.audit_log,
            "ConsentRegistry": self.consent_registry,
        }[contract]


@dataclass(frozen=True)
class DeploymentSpec:
    """Where a reader's user says the contracts are: a deployment file, or the addresses.

    ``chain_id`` None: whatever the node says. ``consent_registry_v2`` None: no consent
    version 2 (a deployment file without ``consentRegistryV2``).
    """

    institution_registry: str
    audit_log: str
    consent_registry: str
    chain_id: int | None = None
    from_block: int = 0
    consent_registry_v2: str | None = None

    @classmethod
    def from_deployment(cls, deployment: Deployment) -> DeploymentSpec:
        return cls(
            deployment.institution_registry,
            deployment.audit_log,
            deployment.consent_registry,
            deployment.chain_id,
            deployment.block_number,
            deployment.consent_registry_v2,
        )

    @classmethod
    def read(cls, path: Path) -> DeploymentSpec:
        """The spec of a deployment file (:class:`DeploymentMismatch` when it is missing or
        malformed)."""
        return cls.from_deployment(Deployment.read(path))

    def resolve(self, chain_id: int) -> TrustedDeployment:
        """The deployment on the chain of id ``chain_id``."""
        if self.chain_id is not None and self.chain_id != chain_id:
            raise DeploymentMismatch(
                f"the chain has id {chain_id}, the deployment was made on chain {self.chain_id}"
            )
        try:
            return TrustedDeployment(
                chain_id=chain_id,
                institution_registry=to_checksum_address(self.institution_registry),
                audit_log=to_checksum_address(self.audit_log),
                consent_registry=to_checksum_address(self.consent_registry),
                block_number=self.from_block,
                consent_registry_v2=(
                    None
                    if self.consent_registry_v2 is None
                    else to_checksum_address(self.consent_registry_v2)
                ),
            )
        except MalformedEventError as exc:
            raise DeploymentMismatch(f"the contract addresses are malformed: {exc.detail}") from exc


@dataclass(frozen=True)
class GrantInfo:
    """A consent grant as stored by the ConsentRegistry. ``revoked_at == 0``: not revoked."""

    grant_id: int
    patient: str
    grantee: str
    record_ref: bytes
    purposes: int
    not_before: int
    expires_at: int
    created_at: int
    revoked_at: int

    @property
    def revoked(self) -> bool:
        return self.revoked_at != 0

    @property
    def all_records(self) -> bool:
        """Whether the grant covers every record of the patient (``recordRef == 0``)."""
        return self.record_ref == bytes(32)


def hash32(value: bytes, what: str) -> bytes:
    """``value`` as a contract's ``bytes32`` argument; a :class:`ProofError` naming ``what``
    unless it is 32 bytes."""
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ProofError(f"{what} must be 32 bytes")
    return bytes(value)
