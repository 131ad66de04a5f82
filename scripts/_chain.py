"""The regulator's own view of the chain: read-only, cached, and batched.

Everything the verification tools trust comes through :class:`RegulatorChain`: checkpoint
roots from the AuditLog, institutions' registrations from the InstitutionRegistry, grant
statuses from the ConsentRegistry, all read from the regulator's own JSON-RPC endpoint at the
contract addresses the regulator configured (never the ones an API names).

Reads are cached for the run (checkpoint roots per size, institutions per address, status
per ``(address, time)`` and per grant question), and the per-event questions
(``wasActiveAt``, ``grantStatusAt``) are asked in JSON-RPC batches: :meth:`prefetch` takes
the :class:`ledger.audit.FactNeeds` of a whole trail or log and answers them in a few round
trips. The calls are the contracts' own view functions, so the answers are the chain's, with
the contracts' semantics, not a re-implementation of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from web3 import Web3

from ledger.audit import FactNeeds, GrantQuery, InstitutionStatus
from ledger.chain.artifacts import load_artifact
from ledger.chain.client import Chain, InstitutionInfo, OnChainCheckpoint, http_web3, rpc_chain
from ledger.chain.deploy import Deployment, DeploymentMismatch
from ledger.chain.tx import ChainError, is_chain_failure
from ledger.eip712 import Domain, keccak, parse_address
from ledger.events import InstitutionKind, audit_log_domain
from ledger.rules import GrantStatus

__all__ = ["DeploymentSpec", "RegulatorChain"]

_WAS_ACTIVE_AT = keccak(b"wasActiveAt(address,uint8,uint64)")[:4]
_GRANT_STATUS_AT = keccak(b"grantStatusAt(uint256,address,address,bytes32,uint8,uint64)")[:4]

#: eth_calls per JSON-RPC batch.
DEFAULT_BATCH = 500


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    return bytes(12) + parse_address(address)


@dataclass(frozen=True)
class DeploymentSpec:
    """Where the regulator says the contracts are: a deployment file, or the addresses.

    ``chain_id`` None: whatever the regulator's own node says.
    """

    institution_registry: str
    audit_log: str
    consent_registry: str
    chain_id: int | None = None
    from_block: int = 0

    @classmethod
    def from_deployment(cls, deployment: Deployment) -> DeploymentSpec:
        return cls(
            deployment.institution_registry,
            deployment.audit_log,
            deployment.consent_registry,
            deployment.chain_id,
            deployment.block_number,
        )

    def resolve(self, chain_id: int) -> Deployment:
        """The :class:`Deployment` on the chain of id ``chain_id``."""
        if self.chain_id is not None and self.chain_id != chain_id:
            raise DeploymentMismatch(
                f"the node's chain id is {chain_id}, the deployment is on chain {self.chain_id}"
            )
        try:
            return Deployment(
                chain_id=chain_id,
                institution_registry=self.institution_registry,
                audit_log=self.audit_log,
                consent_registry=self.consent_registry,
                block_number=self.from_block,
                sources_hash=load_artifact("AuditLog").sources_hash,
            )
        except ValueError as exc:
            raise DeploymentMismatch(f"the contract addresses are malformed: {exc}") from exc


class RegulatorChain:
    """Read-only, cached, batched chain reads for the regulator's tools.

    Implements :class:`ledger.audit.ChainFacts` (once :meth:`prefetch` was given the needs).
    """

    def __init__(self, chain: Chain, *, batch_size: int = DEFAULT_BATCH) -> None:
        self.chain = chain
        self.batch_size = batch_size
        self._latest: tuple[OnChainCheckpoint | None] | None = None
        self._checkpoints: dict[int, OnChainCheckpoint | None] = {}
        self._institutions: dict[str, InstitutionInfo] = {}
        self._active: dict[tuple[str, int], bool] = {}
        self._grants: dict[GrantQuery, GrantStatus] = {}
        #: JSON-RPC round trips made (for the performance figures).
        self.round_trips = 0

    @classmethod
    def connect(
        cls, rpc_url: str, spec: DeploymentSpec, *, timeout: float = 10.0
    ) -> RegulatorChain:
        """Connect to the regulator's node; refuse a chain without medtrail's contracts at
        the configured addresses (:class:`DeploymentMismatch`) or unreachable
        (:class:`ChainError`)."""
        w3 = http_web3(rpc_url, timeout=timeout)
        try:
            chain_id = int(w3.eth.chain_id)
        except Exception as exc:
            if is_chain_failure(exc):
                raise ChainError(f"the chain at {rpc_url} is unreachable: {exc}") from exc
            raise
        deployment = spec.resolve(chain_id)
        return cls(rpc_chain(rpc_url, deployment, None, timeout=timeout))

    # -- what it is -----------------------------------------------------------------------

    @property
    def deployment(self) -> Deployment:
        return self.chain.deployment

    @property
    def chain_id(self) -> int:
        return self.chain.chain_id

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain of events and receipts (the AuditLog's)."""
        return audit_log_domain(self.deployment.chain_id, self.deployment.audit_log)

    @property
    def w3(self) -> Web3:
        return self.chain.w3

    def refresh(self) -> None:
        """Forget what may have changed on chain since (the latest checkpoint); answers about
        the past (roots of given sizes, statuses at given times) stay cached."""
        self._latest = None

    # -- checkpoints ----------------------------------------------------------------------

    def latest_checkpoint(self) -> OnChainCheckpoint | None:
        """The latest checkpoint (read once per run)."""
        if self._latest is None:
            self.round_trips += 1
            self._latest = (self.chain.latest_checkpoint(),)
        return self._latest[0]

    def checkpoint_at(self, size: int) -> OnChainCheckpoint | None:
        """The checkpoint of ``size`` (cached per size); None if the chain holds none."""
        if size not in self._checkpoints:
            self.round_trips += 1
            self._checkpoints[size] = self.chain.checkpoint_at(size)
        return self._checkpoints[size]

    def checkpoint_events(self) -> list[tuple[OnChainCheckpoint, bytes]]:
        """Every committed checkpoint, in commit order, with its transaction hash."""
        self.round_trips += 1
        events = self.chain.checkpoint_events()
        for checkpoint, _tx in events:
            self._checkpoints.setdefault(checkpoint.tree_size, checkpoint)
        return events

    def block_timestamp(self) -> int:
        """The latest block's time."""
        self.round_trips += 1
        return self.chain.latest_timestamp()

    # -- institutions and grants ----------------------------------------------------------

    def institution(self, address: str) -> InstitutionInfo:
        """The registration of ``address`` now (cached): kind, name, registration time."""
        if address not in self._institutions:
            self.round_trips += 1
            self._institutions[address] = self.chain.institution(address)
        return self._institutions[address]

    def known_institutions(self) -> dict[str, InstitutionInfo]:
        """The registrations read so far (no chain access)."""
        return dict(self._institutions)

    def institution_at(self, address: str, at: int) -> InstitutionStatus:
        """:class:`ledger.audit.ChainFacts`: the registration of ``address`` at time ``at``."""
        info = self.institution(address)
        if info.kind == InstitutionKind.NONE or at < info.registered_at:
            return InstitutionStatus(InstitutionKind.NONE, False)
        key = (address, at)
        if key not in self._active:
            self._fetch_active([key])
        return InstitutionStatus(info.kind, self._active[key])

    def grant_status(self, query: GrantQuery) -> GrantStatus:
        """:class:`ledger.audit.ChainFacts`: ``ConsentRegistry.grantStatusAt`` for ``query``."""
        if query not in self._grants:
            self._fetch_grants([query])
        return self._grants[query]

    def prefetch(self, needs: FactNeeds) -> None:
        """Answer every question in ``needs`` now, in batches."""
        for address in sorted({address for address, _ in needs.institutions}):
            self.institution(address)
        active = []
        for address, at in needs.institutions:
            info = self._institutions[address]
            registered = info.kind != InstitutionKind.NONE and at >= info.registered_at
            if registered and (address, at) not in self._active:
                active.append((address, at))
        self._fetch_active(active)
        self._fetch_grants([q for q in needs.grants if q not in self._grants])

    def _fetch_active(self, keys: Sequence[tuple[str, int]]) -> None:
        registry = self.deployment.institution_registry
        calls = [
            (
                registry,
                _WAS_ACTIVE_AT
                + _address_word(address)
                + _word(int(self._institutions[address].kind))
                + _word(at),
            )
            for address, at in keys
        ]
        for key, result in zip(keys, self.call_many(calls), strict=True):
            self._active[key] = int.from_bytes(result[:32], "big") != 0

    def _fetch_grants(self, queries: Sequence[GrantQuery]) -> None:
        registry = self.deployment.consent_registry
        calls = []
        for q in queries:
            if not 0 <= q.grant_id < 2**256:  # pragma: no cover - the event model bounds it
                raise ValueError(f"grant id {q.grant_id} out of range")
            calls.append(
                (
                    registry,
                    _GRANT_STATUS_AT
                    + _word(q.grant_id)
                    + _address_word(q.patient)
                    + _address_word(q.grantee)
                    + bytes(q.record_ref)
                    + _word(q.purpose)
                    + _word(q.at),
                )
            )
        for query, result in zip(queries, self.call_many(calls), strict=True):
            try:
                self._grants[query] = GrantStatus(int.from_bytes(result[:32], "big"))
            except ValueError as exc:
                raise ChainError(f"grantStatusAt answered an unknown status: {exc}") from exc

    # -- raw calls ------------------------------------------------------------------------

    def call_many(self, calls: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """``eth_call`` each ``(to, data)`` on the latest block; JSON-RPC batches when the
        provider supports them, one by one otherwise (the embedded chain)."""
        if not calls:
            return []
        provider: Any = self.w3.provider
        if not hasattr(provider, "make_batch_request"):
            return [self._call_one(to, data) for to, data in calls]
        results: list[bytes] = []
        for start in range(0, len(calls), self.batch_size):
            chunk = calls[start : start + self.batch_size]
            requests = [
                ("eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])
                for to, data in chunk
            ]
            self.round_trips += 1
            try:
                answers = provider.make_batch_request(requests)
            except Exception as exc:
                if is_chain_failure(exc):
                    raise ChainError(f"a batch of {len(chunk)} chain reads failed: {exc}") from exc
                raise
            results.extend(_batch_results(answers, len(chunk)))
        return results

    def _call_one(self, to: str, data: bytes) -> bytes:
        self.round_trips += 1
        try:
            return bytes(self.w3.eth.call({"to": Web3.to_checksum_address(to), "data": data}))
        except Exception as exc:
            if is_chain_failure(exc):
                raise ChainError(f"a chain read failed: {exc}") from exc
            raise


def _batch_results(answers: Any, expected: int) -> Iterable[bytes]:
    if not isinstance(answers, list) or len(answers) != expected:
        raise ChainError(f"the node answered a batch of {expected} calls with {answers!r:.200}")
    # Answers may come in any order: match them by id when the node numbers them.
    ordered = answers
    if all(isinstance(a, dict) and isinstance(a.get("id"), int) for a in answers):
        ids = [a["id"] for a in answers]
        if len(set(ids)) == len(ids):
            ordered = sorted(answers, key=lambda a: a["id"])
    out: list[bytes] = []
    for answer in ordered:
        if not isinstance(answer, dict) or "error" in answer or "result" not in answer:
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise ChainError(f"the node refused a chain read: {error!r:.300}")
        result = answer["result"]
        raw = bytes.fromhex(result[2:]) if isinstance(result, str) else bytes(result)
        if len(raw) < 32:
            raise ChainError(f"a chain read answered {len(raw)} bytes, not a word")
        out.append(raw)
    return out
