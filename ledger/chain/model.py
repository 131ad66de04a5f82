"""What the chain says, as plain values: checkpoints, registrations, deployments, and the
errors of reaching it.

Nothing here talks to a node, so nothing here imports web3: the regulator's tools read the
chain through their own small JSON-RPC client and share these types with the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from ledger.eip712 import to_checksum_address
from ledger.errors import LedgerError, MalformedEventError
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
    """Where medtrail's contracts live."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chain_id: int
    institution_registry: str
    audit_log: str
    consent_registry: str
    block_number: int
    sources_hash: str

    @field_validator("institution_registry", "audit_log", "consent_registry")
    @classmethod
    def _checksum(cls, value: str) -> str:
        try:
            return to_checksum_address(value)
        except MalformedEventError as exc:
            raise ValueError(exc.detail) from None

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
        except ValueError as exc:
            raise DeploymentMismatch(f"deployment file {path} is malformed: {exc}") from exc


@dataclass(frozen=True)
class OnChainCheckpoint:
    """A checkpoint of the event log as the AuditLog contract holds it."""

    tree_size: int
    root_hash: bytes
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
