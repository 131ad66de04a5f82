"""The regulator's own view of the chain: read-only, cached, and batched.

Everything the verification tools trust comes through :class:`RegulatorChain`: checkpoint
roots from the AuditLog, institutions' registrations from the InstitutionRegistry, grant
statuses from the ConsentRegistry, all read from the regulator's own JSON-RPC endpoint at the
contract addresses the regulator configured (never the ones an API names), after checking
that the code there is medtrail's.

Reads are cached for the run (checkpoint roots per size, institutions per address, status
per ``(address, time)`` and per grant question), and the per-event questions
(``wasActiveAt``, ``grantStatusAt``) are asked in JSON-RPC batches: :meth:`prefetch` takes
the :class:`ledger.audit.FactNeeds` of a whole trail or log and answers them in a few round
trips. The calls are the contracts' own view functions, so the answers are the chain's, with
the contracts' semantics, not a re-implementation of them.

The JSON-RPC client is :mod:`_rpc` (httpx), and the few fixed-layout answers are decoded here,
strictly: web3 is not imported (it costs a second of start-up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _rpc import JsonRpc, RpcError, hex_data, quantity

from ledger.audit import FactNeeds, GrantQuery, InstitutionStatus
from ledger.chain.artifacts import load_artifact
from ledger.chain.model import (
    ChainError,
    Deployment,
    DeploymentMismatch,
    InstitutionInfo,
    OnChainCheckpoint,
)
from ledger.eip712 import Domain, keccak, parse_address, to_checksum_address
from ledger.errors import MalformedEventError
from ledger.events import InstitutionKind, audit_log_domain
from ledger.rules import GrantStatus

__all__ = [
    "ChainError",
    "DeploymentMismatch",
    "DeploymentSpec",
    "InstitutionInfo",
    "OnChainCheckpoint",
    "RegulatorChain",
    "TrustedDeployment",
]


def _selector(signature: str) -> bytes:
    return keccak(signature.encode("ascii"))[:4]


_LATEST_CHECKPOINT = _selector("latestCheckpoint()")
_CHECKPOINT_AT = _selector("checkpointAt(uint64)")
_INSTITUTION_OF = _selector("institutionOf(address)")
_WAS_ACTIVE_AT = _selector("wasActiveAt(address,uint8,uint64)")
_GRANT_STATUS_AT = _selector("grantStatusAt(uint256,address,address,bytes32,uint8,uint64)")
#: ``error CheckpointNotFound(uint64 treeSize)``: checkpointAt's answer for an unknown size.
_CHECKPOINT_NOT_FOUND = _selector("CheckpointNotFound(uint64)")
#: ``event CheckpointCommitted(uint64 indexed treeSize, bytes32 rootHash, uint64 previousSize)``
_CHECKPOINT_COMMITTED = keccak(b"CheckpointCommitted(uint64,bytes32,uint64)")

_UINT64_MAX = 2**64 - 1
#: eth_calls per JSON-RPC batch.
DEFAULT_BATCH = 500
#: Blocks per ``eth_getLogs`` request (halved when the node refuses a range).
DEFAULT_LOG_PAGE = 2_000


# --------------------------------------------------------------------------- value objects


@dataclass(frozen=True)
class TrustedDeployment:
    """The contracts the regulator trusts, on the chain its own node serves (checked)."""

    chain_id: int
    institution_registry: str
    audit_log: str
    consent_registry: str
    block_number: int


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

    @classmethod
    def read(cls, path: Path) -> DeploymentSpec:
        """The spec of a deployment file (:class:`DeploymentMismatch` when it is missing or
        malformed)."""
        return cls.from_deployment(Deployment.read(path))

    def resolve(self, chain_id: int) -> TrustedDeployment:
        """The deployment on the chain of id ``chain_id``."""
        if self.chain_id is not None and self.chain_id != chain_id:
            raise DeploymentMismatch(
                f"the node's chain id is {chain_id}, the deployment is on chain {self.chain_id}"
            )
        try:
            return TrustedDeployment(
                chain_id=chain_id,
                institution_registry=to_checksum_address(self.institution_registry),
                audit_log=to_checksum_address(self.audit_log),
                consent_registry=to_checksum_address(self.consent_registry),
                block_number=self.from_block,
            )
        except MalformedEventError as exc:
            raise DeploymentMismatch(f"the contract addresses are malformed: {exc.detail}") from exc


# --------------------------------------------------------------------------- ABI words


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    return bytes(12) + parse_address(address)


def _uint(raw: bytes, offset: int, bits: int, what: str) -> int:
    if len(raw) < offset + 32:
        raise ChainError(f"{what} answered {len(raw)} bytes, too short for its values")
    value = int.from_bytes(raw[offset : offset + 32], "big")
    if value >> bits:
        raise ChainError(f"{what} answered {value:#x}, out of range for uint{bits}")
    return value


def _bool(raw: bytes, offset: int, what: str) -> bool:
    value = _uint(raw, offset, 8, what)
    if value > 1:
        raise ChainError(f"{what} answered {value}, not a bool")
    return value == 1


def _bytes32(raw: bytes, offset: int, what: str) -> bytes:
    if len(raw) < offset + 32:
        raise ChainError(f"{what} answered {len(raw)} bytes, too short for its values")
    return raw[offset : offset + 32]


def _decode_institution(raw: bytes, address: str) -> InstitutionInfo:
    """``institutionOf`` answers one dynamic tuple ``(uint8 kind, bool active,
    uint64 registeredAt, string name)``: an offset, then the tuple's head, then the name."""
    what = f"institutionOf({address})"
    start = _uint(raw, 0, 64, what)
    kind = _uint(raw, start, 8, what)
    active = _bool(raw, start + 32, what)
    registered_at = _uint(raw, start + 64, 64, what)
    name_at = start + _uint(raw, start + 96, 64, what)
    length = _uint(raw, name_at, 64, what)
    if len(raw) < name_at + 32 + length:
        raise ChainError(f"{what} answered a name longer than its data")
    try:
        name = raw[name_at + 32 : name_at + 32 + length].decode("utf-8")
        institution_kind = InstitutionKind(kind)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ChainError(f"{what} answered an unreadable registration: {exc}") from exc
    return InstitutionInfo(address, institution_kind, active, registered_at, name)


# --------------------------------------------------------------------------- the chain


class RegulatorChain:
    """Read-only, cached, batched chain reads for the regulator's tools.

    Implements :class:`ledger.audit.ChainFacts` (once :meth:`prefetch` was given the needs).
    Made by :meth:`connect`, which checks the deployment first.
    """

    def __init__(
        self,
        rpc: JsonRpc,
        deployment: TrustedDeployment,
        *,
        batch_size: int = DEFAULT_BATCH,
        log_page_size: int = DEFAULT_LOG_PAGE,
    ) -> None:
        self.rpc = rpc
        self._deployment = deployment
        self.batch_size = batch_size
        self.log_page_size = log_page_size
        self._latest: tuple[OnChainCheckpoint | None] | None = None
        self._checkpoints: dict[int, OnChainCheckpoint | None] = {}
        self._institutions: dict[str, InstitutionInfo] = {}
        self._active: dict[tuple[str, int], bool] = {}
        self._grants: dict[GrantQuery, GrantStatus] = {}

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        spec: DeploymentSpec,
        *,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> RegulatorChain:
        """Connect to the regulator's node; refuse a chain without medtrail's contracts at
        the configured addresses (:class:`DeploymentMismatch`) or unreachable
        (:class:`ChainError`).

        :param client: an ``httpx.Client`` to send the JSON-RPC requests with (tests);
            by default one is made with ``timeout`` seconds per request.
        """
        rpc = JsonRpc(rpc_url, timeout=timeout, client=client)
        try:
            chain_id = quantity(rpc.call("eth_chainId", []), "eth_chainId")
            deployment = spec.resolve(chain_id)
            _check_code(rpc, deployment)
        except BaseException:
            rpc.close()
            raise
        return cls(rpc, deployment)

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> RegulatorChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what it is -----------------------------------------------------------------------

    @property
    def deployment(self) -> TrustedDeployment:
        return self._deployment

    @property
    def chain_id(self) -> int:
        return self._deployment.chain_id

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain of events and receipts (the AuditLog's)."""
        return audit_log_domain(self._deployment.chain_id, self._deployment.audit_log)

    @property
    def round_trips(self) -> int:
        """JSON-RPC round trips made so far (for the performance figures)."""
        return self.rpc.requests

    def refresh(self) -> None:
        """Forget what may have changed on chain since (the latest checkpoint); answers about
        the past (roots of given sizes, statuses at given times) stay cached."""
        self._latest = None

    # -- checkpoints ----------------------------------------------------------------------

    def latest_checkpoint(self) -> OnChainCheckpoint | None:
        """The latest checkpoint (read once per run); None before the first."""
        if self._latest is None:
            what = "latestCheckpoint()"
            raw = self.call(self._deployment.audit_log, _LATEST_CHECKPOINT, what)
            size = _uint(raw, 0, 64, what)
            checkpoint = None
            if size:
                checkpoint = OnChainCheckpoint(
                    size,
                    _bytes32(raw, 32, what),
                    _uint(raw, 64, 64, what),
                    _uint(raw, 96, 64, what),
                )
            self._latest = (checkpoint,)
        return self._latest[0]

    def checkpoint_at(self, size: int) -> OnChainCheckpoint | None:
        """The checkpoint of ``size`` (cached per size); None if the chain holds none."""
        if size not in self._checkpoints:
            self._checkpoints[size] = self._read_checkpoint(size)
        return self._checkpoints[size]

    def _read_checkpoint(self, size: int) -> OnChainCheckpoint | None:
        if not 0 < size <= _UINT64_MAX:
            return None
        what = f"checkpointAt({size})"
        try:
            raw = self.call(self._deployment.audit_log, _CHECKPOINT_AT + _word(size), what)
        except RpcError as exc:
            data = exc.revert_data()
            if data is not None and data[:4] == _CHECKPOINT_NOT_FOUND:
                return None
            raise
        return OnChainCheckpoint(
            size, _bytes32(raw, 0, what), _uint(raw, 32, 64, what), _uint(raw, 64, 64, what)
        )

    def checkpoint_events(self) -> list[tuple[OnChainCheckpoint, bytes]]:
        """Every committed checkpoint since the deployment's block, in commit order, with
        the hash of the transaction that committed it."""
        audit_log = self._deployment.audit_log
        end = quantity(self.rpc.call("eth_blockNumber", []), "eth_blockNumber")
        logs: list[tuple[int, int, int, bytes, bytes]] = []
        start, page = max(self._deployment.block_number, 0), self.log_page_size
        while start <= end:
            stop = min(start + page - 1, end)
            params = {
                "address": audit_log,
                "topics": ["0x" + _CHECKPOINT_COMMITTED.hex()],
                "fromBlock": hex(start),
                "toBlock": hex(stop),
            }
            try:
                found = self.rpc.call("eth_getLogs", [params])
            except RpcError:
                if page == 1:
                    raise
                page = max(page // 2, 1)  # too many results or too wide a range: narrower
                continue
            if not isinstance(found, list):
                raise ChainError(f"the node answered eth_getLogs with {found!r:.200}")
            logs += [_checkpoint_log(entry, audit_log, start, stop) for entry in found]
            start = stop + 1
        logs.sort(key=lambda entry: (entry[0], entry[1]))
        blocks = sorted({entry[0] for entry in logs})
        timestamps = dict(zip(blocks, self._block_timestamps(blocks), strict=True))
        result = []
        for block, _index, size, root, tx_hash in logs:
            checkpoint = OnChainCheckpoint(size, root, block, timestamps[block])
            self._checkpoints.setdefault(size, checkpoint)
            result.append((checkpoint, tx_hash))
        return result

    def block_timestamp(self) -> int:
        """The latest block's time."""
        block = self.rpc.call("eth_getBlockByNumber", ["latest", False])
        if not isinstance(block, dict):
            raise ChainError(f"the node answered eth_getBlockByNumber with {block!r:.200}")
        return quantity(block.get("timestamp"), "the latest block's timestamp")

    def _block_timestamps(self, numbers: Sequence[int]) -> list[int]:
        timestamps: list[int] = []
        for start in range(0, len(numbers), self.batch_size):
            chunk = numbers[start : start + self.batch_size]
            blocks = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in chunk])
            for number, block in zip(chunk, blocks, strict=True):
                what = f"block {number}"
                if not isinstance(block, dict) or quantity(block.get("number"), what) != number:
                    raise ChainError(f"the node answered {what} with {block!r:.200}")
                timestamps.append(quantity(block.get("timestamp"), f"{what}'s timestamp"))
        return timestamps

    # -- institutions and grants ----------------------------------------------------------

    def institution(self, address: str) -> InstitutionInfo:
        """The registration of ``address`` now (cached): kind, name, registration time."""
        if address not in self._institutions:
            self._fetch_institutions([address])
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
        addresses = sorted({address for address, _ in needs.institutions})
        self._fetch_institutions([a for a in addresses if a not in self._institutions])
        active = []
        for address, at in needs.institutions:
            info = self._institutions[address]
            registered = info.kind != InstitutionKind.NONE and at >= info.registered_at
            if registered and (address, at) not in self._active:
                active.append((address, at))
        self._fetch_active(active)
        self._fetch_grants([q for q in needs.grants if q not in self._grants])

    def _fetch_institutions(self, addresses: Sequence[str]) -> None:
        registry = self._deployment.institution_registry
        calls = [(registry, _INSTITUTION_OF + _address_word(a)) for a in addresses]
        for address, raw in zip(addresses, self.call_many(calls), strict=True):
            self._institutions[address] = _decode_institution(raw, to_checksum_address(address))

    def _fetch_active(self, keys: Sequence[tuple[str, int]]) -> None:
        registry = self._deployment.institution_registry
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
            self._active[key] = _bool(result, 0, "wasActiveAt")

    def _fetch_grants(self, queries: Sequence[GrantQuery]) -> None:
        registry = self._deployment.consent_registry
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
            status = _uint(result, 0, 8, "grantStatusAt")
            try:
                self._grants[query] = GrantStatus(status)
            except ValueError as exc:
                raise ChainError(f"grantStatusAt answered an unknown status: {exc}") from exc

    # -- raw calls ------------------------------------------------------------------------

    def call(self, to: str, data: bytes, what: str) -> bytes:
        """``eth_call`` of ``data`` at ``to`` on the latest block."""
        result = self.rpc.call("eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])
        return hex_data(result, what)

    def call_many(self, calls: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """``eth_call`` each ``(to, data)`` on the latest block, in JSON-RPC batches of
        :attr:`batch_size`; every answer at least one 32-byte word."""
        results: list[bytes] = []
        for start in range(0, len(calls), self.batch_size):
            chunk = calls[start : start + self.batch_size]
            answers = self.rpc.batch(
                [
                    ("eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])
                    for to, data in chunk
                ]
            )
            for answer in answers:
                raw = hex_data(answer, "a chain read")
                if len(raw) < 32:
                    raise ChainError(f"a chain read answered {len(raw)} bytes, not a word")
                results.append(raw)
        return results


def _check_code(rpc: JsonRpc, deployment: TrustedDeployment) -> None:
    """:class:`DeploymentMismatch` unless the code at each address is medtrail's contract
    (immutable values masked), as ``ledger.chain.deploy.check_deployment`` checks it."""
    contracts = (
        ("InstitutionRegistry", deployment.institution_registry),
        ("AuditLog", deployment.audit_log),
        ("ConsentRegistry", deployment.consent_registry),
    )
    codes = rpc.batch([("eth_getCode", [address, "latest"]) for _, address in contracts])
    for (name, address), answer in zip(contracts, codes, strict=True):
        code = hex_data(answer, f"eth_getCode({address})")
        if not code:
            raise DeploymentMismatch(
                f"no contract at {address} where {name} should be: the chain was reset or "
                f"is not the one this service was deployed to (chain at {rpc.url})",
                url=rpc.url,
            )
        if not load_artifact(name).matches_code(code):
            raise DeploymentMismatch(
                f"the contract at {address} is not medtrail's {name} (chain at {rpc.url})",
                url=rpc.url,
            )


def _checkpoint_log(
    entry: Any, audit_log: str, start: int, stop: int
) -> tuple[int, int, int, bytes, bytes]:
    """One ``CheckpointCommitted`` log: (block, log index, tree size, root, tx hash)."""
    what = "a CheckpointCommitted log"
    if not isinstance(entry, dict):
        raise ChainError(f"the node answered eth_getLogs with {entry!r:.200}")
    address = entry.get("address")
    topics = entry.get("topics")
    if not isinstance(address, str) or address.lower() != audit_log.lower():
        raise ChainError(f"the node answered eth_getLogs with a log of {address!r:.60}")
    if not isinstance(topics, list) or len(topics) != 2:
        raise ChainError(f"{what} has {topics!r:.200} as topics")
    if hex_data(topics[0], what) != _CHECKPOINT_COMMITTED:
        raise ChainError(f"the node answered eth_getLogs with another event: {topics[0]!r:.80}")
    size_topic, data = hex_data(topics[1], what), hex_data(entry.get("data"), what)
    if len(size_topic) != 32 or len(data) != 64:
        raise ChainError(f"{what} is malformed: {entry!r:.300}")
    block = quantity(entry.get("blockNumber"), f"{what}'s block")
    if not start <= block <= stop:
        raise ChainError(f"{what} of block {block} is outside the range asked ({start}-{stop})")
    tx_hash = hex_data(entry.get("transactionHash"), f"{what}'s transaction")
    if len(tx_hash) != 32:
        raise ChainError(f"{what} has a malformed transaction hash")
    return (
        block,
        quantity(entry.get("logIndex"), f"{what}'s index"),
        _uint(size_topic, 0, 64, what),
        _bytes32(data, 0, what),
        tx_hash,
    )
