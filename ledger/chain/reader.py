"""The one chain reader: every read the service, the wallet and the regulator's tools make.

:class:`ChainReader` reads medtrail's three contracts over JSON-RPC (:mod:`ledger.chain.rpc`:
an HTTP node, or the embedded chain in process): the chain id and blocks, the deployment's
code, checkpoints (the latest, one by size, every commit), institutions (registration,
history, status at a time), grants (status at a time, one grant, a patient's grant ids, the
consent nonce) and roles. Calls are encoded and answers decoded from the committed artifacts'
ABIs (:mod:`ledger.chain.abi`, ``eth_abi``), strictly; a malformed answer is a
:class:`ChainError`, never a wrong value. It holds no cache (what the chain says may change)
and is thread-safe as its transport is: the service shares one.

:class:`ChainView` is one run's view of the chain on top of a reader: what it read is cached
for the run (the latest checkpoint once, checkpoints per size, registrations and status
histories per address, statuses per grant question), and the per-event questions of a whole
trail or log (:class:`ledger.audit.FactNeeds`) are answered in JSON-RPC batches by
:meth:`ChainView.prefetch`. It is what the verifier reads (:mod:`ledger.trail`). The calls
are the contracts' own view functions, so the answers are the chain's, with the contracts'
semantics; the one answer computed here is an institution's status at a time, from its
``historyOf`` by :func:`ledger.logstate.status_at` (ingest's own function, tested against
the contract's ``wasActiveAt``), so that an audit does not ask once per second its events
are dated at.

The contracts read are the ones the caller trusts (:class:`DeploymentSpec`: a deployment
file, or addresses), after :meth:`ChainReader.connect` checked that the chain id is theirs and
that the code at each address is medtrail's. web3 is not imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx

from ledger.audit import Anchor, FactNeeds, GrantQuery, InstitutionStatus, Revocation
from ledger.chain.abi import error_selector, event_topic, function
from ledger.chain.artifacts import load_artifact
from ledger.chain.model import (
    ChainError,
    CheckpointRoots,
    DeploymentMismatch,
    DeploymentSpec,
    GrantInfo,
    InstitutionInfo,
    OnChainCheckpoint,
    TrustedDeployment,
)
from ledger.chain.rpc import JsonRpc, RpcError, hex_data, quantity
from ledger.eip712 import Domain, keccak, to_checksum_address
from ledger.errors import MalformedEventError
from ledger.events import InstitutionKind, audit_log_domain
from ledger.logstate import status_at
from ledger.rules import GrantStatus

__all__ = [
    "CONSENT_V2",
    "DEFAULT_BATCH",
    "DEFAULT_LOG_PAGE",
    "LOG_OPERATOR_ROLE",
    "REGISTRAR_ROLE",
    "BlockTag",
    "ChainReader",
    "ChainView",
    "CheckpointCommit",
    "CheckpointRoots",
    "DeploymentSpec",
    "GrantInfo",
    "TrustedDeployment",
    "check_code",
]

#: ``eth_call``s (or blocks) per JSON-RPC batch.
DEFAULT_BATCH: Final = 500
#: Blocks per ``eth_getLogs`` request (halved when the node refuses a range).
DEFAULT_LOG_PAGE: Final = 2_000

REGISTRAR_ROLE: Final = keccak(b"REGISTRAR_ROLE")
LOG_OPERATOR_ROLE: Final = keccak(b"LOG_OPERATOR_ROLE")

_UINT64_MAX: Final = 2**64 - 1
_INSTITUTIONS: Final = "InstitutionRegistry"
_AUDIT_LOG: Final = "AuditLog"
_CONSENT: Final = "ConsentRegistry"
#: Consent version 2's contract (:mod:`ledger.chain.consent`), when the deployment has it.
CONSENT_V2: Final = "ConsentRegistryV2"

#: A block by number, or the latest one.
BlockTag = int | Literal["latest"]
#: One commit of a checkpoint: the checkpoint, and the hash of the transaction that made it.
CheckpointCommit = tuple[OnChainCheckpoint, bytes]


def _address(value: str, field: str = "address") -> str:
    try:
        return to_checksum_address(value)
    except MalformedEventError as exc:
        raise MalformedEventError(f"{field} is not an address: {value!r}", field=field) from exc


def _topic(value: int | str) -> str:
    """A 32-byte log topic of a uint or an address, as 0x-hex."""
    if isinstance(value, str):
        return "0x" + bytes(12).hex() + _address(value)[2:].lower()
    return "0x" + value.to_bytes(32, "big").hex()


# --------------------------------------------------------------------------- the reader


class ChainReader:
    """Reads of medtrail's contracts over JSON-RPC, uncached and batched where it pays.

    :param rpc: the node (:class:`~ledger.chain.rpc.JsonRpc` over HTTP or in process).
    :param trusted: the contracts to read (checked by :meth:`connect`, not here).
    :param batch_size: requests per JSON-RPC batch.
    :param log_page_size: blocks per ``eth_getLogs`` request.
    """

    def __init__(
        self,
        rpc: JsonRpc,
        trusted: TrustedDeployment,
        *,
        batch_size: int = DEFAULT_BATCH,
        log_page_size: int = DEFAULT_LOG_PAGE,
    ) -> None:
        if batch_size < 1 or log_page_size < 1:
            raise ValueError("batch_size and log_page_size must be >= 1")
        self.rpc = rpc
        self.trusted = trusted
        self.batch_size = batch_size
        self.log_page_size = log_page_size

    @classmethod
    def connect(
        cls,
        rpc: JsonRpc | str,
        spec: DeploymentSpec,
        *,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
        batch_size: int = DEFAULT_BATCH,
        log_page_size: int = DEFAULT_LOG_PAGE,
    ) -> ChainReader:
        """A reader of the node at ``rpc`` (a URL, or a client), after checking its chain id
        against ``spec`` and that medtrail's contracts are at the addresses it names:
        :class:`DeploymentMismatch` otherwise, :class:`ChainError` when unreachable.

        :param client: an ``httpx.Client`` to send the JSON-RPC requests with (tests);
            by default one is made with ``timeout`` seconds per request.
        """
        if isinstance(rpc, str):
            rpc = JsonRpc(rpc, timeout=timeout, client=client)
        try:
            chain_id = quantity(rpc.call("eth_chainId", []), "eth_chainId")
            trusted = spec.resolve(chain_id)
            check_code(rpc, trusted)
        except BaseException:
            rpc.close()
            raise
        return ChainReader(rpc, trusted, batch_size=batch_size, log_page_size=log_page_size)

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> ChainReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what it reads --------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        return self.trusted.chain_id

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain of events and receipts (the AuditLog's)."""
        return audit_log_domain(self.trusted.chain_id, self.trusted.audit_log)

    @property
    def round_trips(self) -> int:
        """JSON-RPC round trips made so far (for the performance figures)."""
        return self.rpc.requests

    # -- blocks ---------------------------------------------------------------------------

    def block_number(self) -> int:
        """The latest block number."""
        return quantity(self.rpc.call("eth_blockNumber", []), "eth_blockNumber")

    def _block(self, tag: BlockTag) -> dict[str, Any] | None:
        block = self.rpc.call(
            "eth_getBlockByNumber", ["latest" if tag == "latest" else hex(tag), False]
        )
        if block is None:
            return None
        if not isinstance(block, dict):
            raise ChainError(f"the node answered eth_getBlockByNumber with {block!r:.200}")
        return block

    def latest_timestamp(self) -> int:
        """The latest block's time."""
        block = self._block("latest")
        if block is None:
            raise ChainError("the node answered eth_getBlockByNumber(latest) with no block")
        return quantity(block.get("timestamp"), "the latest block's timestamp")

    def block_hash(self, number: int) -> bytes | None:
        """The hash of the canonical block ``number``; None if there is no such block yet."""
        block = self._block(number)
        if block is None:
            return None
        what = f"block {number}"
        if quantity(block.get("number"), what) != number:
            raise ChainError(f"the node answered {what} with block {block.get('number')!r:.40}")
        block_hash = hex_data(block.get("hash"), f"{what}'s hash")
        if len(block_hash) != 32:
            raise ChainError(f"the node answered {what} with a malformed hash")
        return block_hash

    def block_timestamps(self, numbers: Sequence[int]) -> list[int]:
        """The time of each block of ``numbers``, in batches."""
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

    # -- calls ----------------------------------------------------------------------------

    def call(self, contract: str, name: str, *args: Any) -> tuple[Any, ...]:
        """``contract.name(*args)`` on the latest block, decoded from the ABI."""
        fn = function(contract, name)
        what = f"{name}()" if not args else f"{name}(…)"
        result = self.rpc.call(
            "eth_call",
            [{"to": self.trusted.address_of(contract), "data": _hex(fn.encode(*args))}, "latest"],
        )
        return fn.decode(hex_data(result, what), what)

    def call_many(
        self,
        contract: str,
        name: str,
        calls: Sequence[tuple[Any, ...]],
        *,
        at: str | None = None,
        varying: int | None = None,
    ) -> list[Any]:
        """``contract.name(*args)`` for each ``args`` of ``calls``, in JSON-RPC batches; each
        answer's decoded outputs (the only output alone when there is one). ``at``: the
        contract's address when it is not one of the deployment's (ConsentRegistryV2).
        ``varying``: the one argument (of a static type) the calls mostly differ in, so that
        each is encoded from another's calldata (:meth:`Function.encode_calls`)."""
        fn = function(contract, name)
        to = self.trusted.address_of(contract) if at is None else at
        results: list[Any] = []
        encoded = None if varying is None else fn.encode_calls(calls, varying)
        for start in range(0, len(calls), self.batch_size):
            chunk = calls[start : start + self.batch_size]
            data = (
                [fn.encode(*a) for a in chunk]
                if encoded is None
                else encoded[start : start + self.batch_size]
            )
            answers = self.rpc.batch(
                [("eth_call", [{"to": to, "data": _hex(d)}, "latest"]) for d in data]
            )
            for answer in answers:
                values = fn.decode(hex_data(answer, f"{name}()"), f"{name}()")
                results.append(values[0] if len(values) == 1 else values)
        return results

    def _not_found(self, exc: RpcError, contract: str, error: str) -> bool:
        data = exc.revert_data()
        return data is not None and data[:4] == error_selector(contract, error)

    # -- the deployment's code ------------------------------------------------------------

    def check_code(self) -> None:
        """:class:`DeploymentMismatch` unless medtrail's contracts are at the addresses."""
        check_code(self.rpc, self.trusted)

    # -- checkpoints ----------------------------------------------------------------------

    def latest_checkpoint(self) -> OnChainCheckpoint | None:
        """The latest committed checkpoint; None before the first."""
        size, root, index_root, block_number, timestamp = self.call(_AUDIT_LOG, "latestCheckpoint")
        if size == 0:
            return None
        return OnChainCheckpoint(size, root, index_root, block_number, timestamp)

    def checkpoint_at(self, size: int) -> CheckpointRoots | None:
        """The roots committed for tree size ``size``; None if no checkpoint was committed for
        that size. (Its block and time are in its log: :meth:`checkpoint_commit`.)"""
        if not 0 < size <= _UINT64_MAX:
            return None
        try:
            ((root, index_root),) = self.call(_AUDIT_LOG, "checkpointAt", size)
        except RpcError as exc:
            if self._not_found(exc, _AUDIT_LOG, "CheckpointNotFound"):
                return None
            raise
        return CheckpointRoots(size, root, index_root)

    def checkpoint_events(
        self, from_block: int | None = None, to_block: BlockTag = "latest"
    ) -> list[CheckpointCommit]:
        """Every ``CheckpointCommitted`` log in the block range (from the deployment's block
        by default), in commit order, with the hash of the transaction that committed it."""
        start = self.trusted.block_number if from_block is None else from_block
        return self._checkpoint_commits(
            self._logs(_AUDIT_LOG, "CheckpointCommitted", [], start, to_block)
        )

    def checkpoint_commit(
        self, size: int, from_block: int | None = None, to_block: BlockTag = "latest"
    ) -> CheckpointCommit | None:
        """The commit of the checkpoint of ``size`` (its block, time and transaction), from its
        ``CheckpointCommitted`` log in the block range (from the deployment's block by default:
        give the block when it is known, a node pages long ranges); None if there is none."""
        if not 0 < size <= _UINT64_MAX:
            return None
        start = self.trusted.block_number if from_block is None else from_block
        logs = self._logs(_AUDIT_LOG, "CheckpointCommitted", [_topic(size)], start, to_block)
        commits = self._checkpoint_commits(logs)
        return commits[-1] if commits else None

    def find_checkpoint_tx(self, size: int, from_block: int | None = None) -> bytes | None:
        """The hash of the transaction that committed the checkpoint of ``size``, if any
        (searched from ``from_block``, by default the deployment's block)."""
        commit = self.checkpoint_commit(size, from_block)
        return None if commit is None else commit[1]

    def _checkpoint_commits(
        self, logs: list[_Log], timestamps: dict[int, int] | None = None
    ) -> list[CheckpointCommit]:
        times = dict(timestamps or {})
        missing = sorted({log.block for log in logs} - set(times))
        times.update(zip(missing, self.block_timestamps(missing), strict=True))
        commits = []
        for log in logs:
            what = "a CheckpointCommitted log"
            if len(log.topics) != 2:
                raise ChainError(f"{what} has {len(log.topics)} topics, not 2")
            (size,) = _decode(["uint64"], log.topics[1], what)
            root, index_root, _previous = _decode(["bytes32", "bytes32", "uint64"], log.data, what)
            commits.append(
                (
                    OnChainCheckpoint(size, root, index_root, log.block, times[log.block]),
                    log.tx_hash,
                )
            )
        return commits

    # -- institutions ---------------------------------------------------------------------

    def institution(self, address: str) -> InstitutionInfo:
        """The registration of ``address`` now (kind ``NONE`` if never registered)."""
        return self.institutions([address])[0]

    def institutions(self, addresses: Sequence[str]) -> list[InstitutionInfo]:
        """The registration of each address, in batches."""
        checksummed = [_address(a) for a in addresses]
        answers = self.call_many(_INSTITUTIONS, "institutionOf", [(a,) for a in checksummed])
        return [_institution(a, answer) for a, answer in zip(checksummed, answers, strict=True)]

    def was_active_at(self, address: str, kind: InstitutionKind | int, t: int) -> bool:
        """Whether ``address`` was registered with ``kind`` and active at block time ``t``
        (the contract's own answer; the tools compute it from :meth:`institution_history`)."""
        (active,) = self.call(_INSTITUTIONS, "wasActiveAt", _address(address), int(kind), t)
        return bool(active)

    def institution_history(self, address: str) -> list[tuple[int, bool]]:
        """Every status change of ``address``: ``(since, active)`` in time order (empty if it
        was never registered), from which :func:`ledger.logstate.status_at` answers
        ``wasActiveAt`` for any time without asking the chain again."""
        return self.institution_histories([address])[0]

    def institution_histories(self, addresses: Sequence[str]) -> list[list[tuple[int, bool]]]:
        """:meth:`institution_history` of each address, in batches."""
        checksummed = [(_address(a),) for a in addresses]
        return [
            [(int(since), bool(active)) for since, active in history]
            for history in self.call_many(_INSTITUTIONS, "historyOf", checksummed)
        ]

    def registrations(self, from_block: int, to_block: int) -> list[tuple[str, InstitutionKind]]:
        """The institutions registered in blocks ``[from_block, to_block]`` (the
        ``InstitutionRegistered`` logs): ``(address, kind)`` in chain order. Kinds are
        permanent; the name, status and time are :meth:`institutions`'s to read."""
        what = "an InstitutionRegistered log"
        found: list[tuple[str, InstitutionKind]] = []
        for log in self._logs(_INSTITUTIONS, "InstitutionRegistered", [], from_block, to_block):
            if len(log.topics) != 2:
                raise ChainError(f"{what} has {len(log.topics)} topics, not 2")
            (address,) = _decode(["address"], log.topics[1], what)
            kind, _name = _decode(["uint8", "string"], log.data, what)
            try:
                found.append((to_checksum_address(address), InstitutionKind(kind)))
            except ValueError as exc:
                raise ChainError(f"{what} names an unknown kind {kind}") from exc
        return found

    def is_active(self, address: str) -> bool:
        """Whether ``address`` is a registered institution, active now."""
        (active,) = self.call(_INSTITUTIONS, "isActive", _address(address))
        return bool(active)

    # -- roles ----------------------------------------------------------------------------

    def is_log_operator(self, address: str) -> bool:
        """Whether ``address`` holds the AuditLog's LOG_OPERATOR_ROLE: may commit checkpoints."""
        (held,) = self.call(_AUDIT_LOG, "hasRole", LOG_OPERATOR_ROLE, _address(address))
        return bool(held)

    def is_registrar(self, address: str) -> bool:
        """Whether ``address`` holds the InstitutionRegistry's REGISTRAR_ROLE: may register,
        suspend and reinstate institutions."""
        (held,) = self.call(_INSTITUTIONS, "hasRole", REGISTRAR_ROLE, _address(address))
        return bool(held)

    # -- consent --------------------------------------------------------------------------

    def grant(self, grant_id: int) -> GrantInfo | None:
        """Grant ``grant_id`` as stored now; None if there is no such grant."""
        if not 0 < grant_id < 2**256:
            return None
        try:
            (stored,) = self.call(_CONSENT, "getGrant", grant_id)
        except RpcError as exc:
            if self._not_found(exc, _CONSENT, "GrantNotFound"):
                return None
            raise
        patient, not_before, grantee, expires_at, created_at, revoked_at, record_ref, purposes = (
            stored
        )
        return GrantInfo(
            grant_id=grant_id,
            patient=patient,
            grantee=grantee,
            record_ref=record_ref,
            purposes=purposes,
            not_before=not_before,
            expires_at=expires_at,
            created_at=created_at,
            revoked_at=revoked_at,
        )

    def grant_status_at(
        self,
        grant_id: int,
        patient: str,
        grantee: str,
        record_ref: bytes,
        purpose: int,
        t: int,
    ) -> GrantStatus:
        """Whether grant ``grant_id`` covered an access by ``grantee`` to ``record_ref`` of
        ``patient`` for ``purpose`` at block time ``t`` and, if not, why."""
        return self.grant_statuses(
            [GrantQuery(grant_id, patient, grantee, record_ref, purpose, t)]
        )[0]

    def grant_statuses(self, queries: Sequence[GrantQuery]) -> list[GrantStatus]:
        """``grantStatusAt`` for each question, in batches (a grant id out of range: not
        found, without asking)."""
        asked = [q for q in queries if 0 <= q.grant_id < 2**256]
        calls = [
            (
                q.grant_id,
                _address(q.patient, "patient"),
                _address(q.grantee, "grantee"),
                _record_ref(q.record_ref),
                int(q.purpose),
                q.at,
            )
            for q in asked
        ]
        # A trail's or a batch's questions mostly differ in their time alone (argument 5).
        answers = iter(self.call_many(_CONSENT, "grantStatusAt", calls, varying=5))
        statuses = []
        for query in queries:
            if not 0 <= query.grant_id < 2**256:
                statuses.append(GrantStatus.NOT_FOUND)
                continue
            value = next(answers)
            try:
                statuses.append(GrantStatus(value))
            except ValueError as exc:
                raise ChainError(f"grantStatusAt answered an unknown status: {exc}") from exc
        return statuses

    def grant_revocations(self, grant_ids: Sequence[int]) -> list[Revocation]:
        """When each grant was revoked (0: not) and its window, from ``getGrant`` in batches;
        only for grants the chain holds (one whose status was asked and found)."""
        stored = self.call_many(_CONSENT, "getGrant", [(grant_id,) for grant_id in grant_ids])
        return [Revocation(int(s[5]), int(s[1]), int(s[3])) for s in stored]

    def consent_nonce(self, patient: str) -> int:
        """The nonce ``patient``'s next signed consent request must carry."""
        (nonce,) = self.call(_CONSENT, "nonces", _address(patient, "patient"))
        return int(nonce)

    def grant_ids_of(self, patient: str) -> list[int]:
        """The ids of every grant ``patient`` ever made, in increasing order (no grant read:
        a caller reads only the grants it pages through)."""
        topics = [None, _topic(_address(patient, "patient"))]
        logs = self._logs(_CONSENT, "GrantCreated", topics, self.trusted.block_number, "latest")
        ids = set()
        for log in logs:
            if len(log.topics) < 2:
                raise ChainError(f"a GrantCreated log has {len(log.topics)} topics")
            (grant_id,) = _decode(["uint256"], log.topics[1], "a GrantCreated log")
            ids.add(grant_id)
        return sorted(ids)

    def grants_of(self, patient: str) -> list[GrantInfo]:
        """Every grant ``patient`` ever made, by id, in its current state (revoked included)."""
        return [info for info in map(self.grant, self.grant_ids_of(patient)) if info is not None]

    # -- logs -----------------------------------------------------------------------------

    def _logs(
        self,
        contract: str,
        event: str,
        topics: list[str | None],
        from_block: int,
        to_block: BlockTag,
    ) -> list[_Log]:
        """``event`` logs of ``contract`` (further topics: None matches any) in
        ``[from_block, to_block]``, paged by block range, in chain order. A node refusing a
        range (too many results, range too wide) gets half the range."""
        address = self.trusted.address_of(contract)
        signature = event_topic(contract, event)
        end = self.block_number() if to_block == "latest" else to_block
        found: list[_Log] = []
        start, page = max(from_block, 0), self.log_page_size
        while start <= end:
            stop = min(start + page - 1, end)
            params = {
                "address": address,
                "topics": [_hex(signature), *topics],
                "fromBlock": hex(start),
                "toBlock": hex(stop),
            }
            try:
                answer = self.rpc.call("eth_getLogs", [params])
            except RpcError:
                if page == 1:
                    raise
                page = max(page // 2, 1)
                continue
            if not isinstance(answer, list):
                raise ChainError(f"the node answered eth_getLogs with {answer!r:.200}")
            found += [_Log.parse(entry, address, signature, event, start, stop) for entry in answer]
            start = stop + 1
        found.sort(key=lambda log: (log.block, log.index))
        return found


@dataclass(frozen=True)
class _Log:
    block: int
    index: int
    topics: tuple[bytes, ...]
    data: bytes
    tx_hash: bytes

    @classmethod
    def parse(
        cls, entry: Any, address: str, signature: bytes, event: str, start: int, stop: int
    ) -> _Log:
        """One log as ``eth_getLogs`` answers it, checked to be what was asked."""
        what = f"a {event} log"
        if not isinstance(entry, dict):
            raise ChainError(f"the node answered eth_getLogs with {entry!r:.200}")
        served = entry.get("address")
        if not isinstance(served, str) or served.lower() != address.lower():
            raise ChainError(f"the node answered eth_getLogs with a log of {served!r:.60}")
        topics = entry.get("topics")
        if not isinstance(topics, list) or not topics:
            raise ChainError(f"{what} has {topics!r:.200} as topics")
        parsed = tuple(hex_data(topic, what) for topic in topics)
        if parsed[0] != signature:
            raise ChainError(f"the node answered eth_getLogs with another event: {topics[0]!r:.80}")
        if any(len(topic) != 32 for topic in parsed):
            raise ChainError(f"{what} is malformed: {entry!r:.300}")
        block = quantity(entry.get("blockNumber"), f"{what}'s block")
        if not start <= block <= stop:
            raise ChainError(f"{what} of block {block} is outside the range asked ({start}-{stop})")
        tx_hash = hex_data(entry.get("transactionHash"), f"{what}'s transaction")
        if len(tx_hash) != 32:
            raise ChainError(f"{what} has a malformed transaction hash")
        return cls(
            block,
            quantity(entry.get("logIndex"), f"{what}'s index"),
            parsed,
            hex_data(entry.get("data"), what),
            tx_hash,
        )


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _decode(types: list[str], data: bytes, what: str) -> tuple[Any, ...]:
    from eth_abi.abi import decode
    from eth_abi.exceptions import DecodingError

    try:
        return tuple(decode(types, data))
    except (DecodingError, ValueError, OverflowError) as exc:
        raise ChainError(f"{what} is not an encoding of ({', '.join(types)}): {exc}") from exc


def _record_ref(value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise MalformedEventError("recordRef must be 32 bytes", field="recordRef")
    return bytes(value)


def _institution(address: str, answer: tuple[Any, ...]) -> InstitutionInfo:
    kind, active, registered_at, name = answer
    try:
        institution_kind = InstitutionKind(kind)
    except ValueError as exc:
        raise ChainError(f"institutionOf answered an unreadable registration: {exc}") from exc
    return InstitutionInfo(address, institution_kind, bool(active), int(registered_at), str(name))


def check_contract_code(rpc: JsonRpc, name: str, address: str) -> None:
    """:class:`DeploymentMismatch` unless the code at ``address`` is medtrail's ``name`` (for a
    contract outside the deployment: ConsentRegistryV2)."""
    code = hex_data(rpc.call("eth_getCode", [address, "latest"]), f"eth_getCode({address})")
    if not code or not load_artifact(name).matches_code(code):
        raise DeploymentMismatch(
            f"the contract at {address} is not medtrail's {name} (chain at {rpc.name})",
            url=rpc.name,
        )


def check_code(rpc: JsonRpc, trusted: TrustedDeployment) -> None:
    """:class:`DeploymentMismatch` unless the code at each address is medtrail's contract
    (immutable values masked), read in one batch: ConsentRegistryV2's too when named."""
    contracts = [
        (_INSTITUTIONS, trusted.institution_registry),
        (_AUDIT_LOG, trusted.audit_log),
        (_CONSENT, trusted.consent_registry),
    ]
    if trusted.consent_registry_v2 is not None:
        contracts.append((CONSENT_V2, trusted.consent_registry_v2))
    codes = rpc.batch([("eth_getCode", [address, "latest"]) for _, address in contracts])
    for (name, address), answer in zip(contracts, codes, strict=True):
        code = hex_data(answer, f"eth_getCode({address})")
        if not code:
            raise DeploymentMismatch(
                f"no contract at {address} where {name} should be: the chain was reset or "
                f"is not the one this deployment was made on (chain at {rpc.name})",
                url=rpc.name,
            )
        if not load_artifact(name).matches_code(code):
            raise DeploymentMismatch(
                f"the contract at {address} is not medtrail's {name} (chain at {rpc.name})",
                url=rpc.name,
            )


# --------------------------------------------------------------------------- one run's view


class ChainView:
    """One run's view of the chain (a trail verified, a log audited, a wallet's report): every
    answer cached for the run, per-event questions answered in batches (:meth:`prefetch`).

    Implements the verifier's :class:`ledger.trail.CheckpointSource` and
    :class:`ledger.trail.FactSource`.
    ``owns``: close the reader with the view (the tools' :meth:`connect`).
    """

    def __init__(self, reader: ChainReader, *, owns: bool = False) -> None:
        self.reader = reader
        self._owns = owns
        self._latest: tuple[OnChainCheckpoint | None] | None = None
        self._commits: list[CheckpointCommit] | None = None
        self._checkpoints: dict[int, CheckpointRoots | None] = {}
        self._institutions: dict[str, InstitutionInfo] = {}
        #: Per registered address: its status history (``historyOf``).
        self._histories: dict[str, list[tuple[int, bool]]] = {}
        self._grants: dict[GrantQuery, GrantStatus] = {}
        self._revocations: dict[int, Revocation | None] = {}

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        spec: DeploymentSpec,
        *,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
        batch_size: int = DEFAULT_BATCH,
        log_page_size: int = DEFAULT_LOG_PAGE,
    ) -> ChainView:
        """A view of the node at ``rpc_url`` (:meth:`ChainReader.connect`), owning its reader."""
        reader = ChainReader.connect(
            rpc_url,
            spec,
            timeout=timeout,
            client=client,
            batch_size=batch_size,
            log_page_size=log_page_size,
        )
        return cls(reader, owns=True)

    def close(self) -> None:
        if self._owns:
            self.reader.close()

    def __enter__(self) -> ChainView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what it is -----------------------------------------------------------------------

    @property
    def trusted(self) -> TrustedDeployment:
        return self.reader.trusted

    @property
    def chain_id(self) -> int:
        return self.reader.chain_id

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain of events and receipts (the AuditLog's)."""
        return self.reader.domain

    @property
    def round_trips(self) -> int:
        """JSON-RPC round trips made so far (for the performance figures)."""
        return self.reader.round_trips

    def refresh(self) -> None:
        """Forget what may have changed on chain since (the latest checkpoint, the list of
        commits, institutions' status histories: a change is dated when it is mined, so a
        time asked about may be after it); answers that cannot change (roots of given sizes,
        grant statuses at given times) stay cached."""
        self._latest = None
        self._commits = None
        self._histories.clear()

    # -- checkpoints ----------------------------------------------------------------------

    def latest_checkpoint(self) -> OnChainCheckpoint | None:
        """The latest checkpoint (read once per run); None before the first."""
        if self._latest is None:
            self._latest = (self.reader.latest_checkpoint(),)
        return self._latest[0]

    def checkpoint_at(self, size: int) -> CheckpointRoots | None:
        """The roots of the checkpoint of ``size`` (cached per size); None if the chain holds
        none."""
        if size not in self._checkpoints:
            self._checkpoints[size] = self.reader.checkpoint_at(size)
        return self._checkpoints[size]

    def checkpoint_events(self) -> list[CheckpointCommit]:
        """Every committed checkpoint since the deployment's block, in commit order, with the
        hash of the transaction that committed it (read once per run)."""
        if self._commits is None:
            self._commits = self.reader.checkpoint_events()
            for checkpoint, _tx in self._commits:
                self._checkpoints.setdefault(checkpoint.tree_size, checkpoint)
        return list(self._commits)

    def anchors(self, leaf_indexes: Sequence[int] = ()) -> list[Anchor]:
        """:class:`ledger.trail.CheckpointSource`: every on-chain checkpoint (read once per
        run), whatever the leaves."""
        return [
            Anchor(c.tree_size, c.root_hash, c.timestamp, c.block_number)
            for c, _tx in self.checkpoint_events()
        ]

    def block_timestamp(self) -> int:
        """The latest block's time (not cached)."""
        return self.reader.latest_timestamp()

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
        """:class:`ledger.audit.ChainFacts`: the registration of ``address`` at time ``at``.

        Answered from the institution's status history (``historyOf``, read once per view,
        until :meth:`refresh`) by :func:`ledger.logstate.status_at`, as ingest's directory
        answers: what the contract's ``wasActiveAt`` computes from the same history, without
        a call per time asked (an audit asks one per event's second)."""
        info = self.institution(address)
        if info.kind == InstitutionKind.NONE or at < info.registered_at:
            return InstitutionStatus(InstitutionKind.NONE, False)
        if address not in self._histories:
            self._fetch_histories([address])
        return status_at(info.kind, info.registered_at, self._histories[address], at)

    def grant_status(self, query: GrantQuery) -> GrantStatus:
        """:class:`ledger.audit.ChainFacts`: ``ConsentRegistry.grantStatusAt`` for ``query``."""
        if query not in self._grants:
            self._fetch_grants([query])
        return self._grants[query]

    def grant_revocation(self, grant_id: int) -> Revocation | None:
        """:class:`ledger.audit.ChainFacts`: when grant ``grant_id`` was revoked, and its
        window (``getGrant``; None if there is no such grant)."""
        if grant_id not in self._revocations:
            info = self.reader.grant(grant_id)
            self._revocations[grant_id] = (
                None
                if info is None
                else Revocation(info.revoked_at, info.not_before, info.expires_at)
            )
        return self._revocations[grant_id]

    def prefetch(self, needs: FactNeeds) -> None:
        """Answer every question in ``needs`` now, in batches (and, for
        each grant found revoked, when it was: :meth:`grant_revocation`)."""
        addresses = sorted({address for address, _ in needs.institutions})
        self._fetch_institutions([a for a in addresses if a not in self._institutions])
        self._fetch_histories(
            [
                a
                for a in addresses
                if self._institutions[a].kind != InstitutionKind.NONE and a not in self._histories
            ]
        )
        self._fetch_grants([q for q in needs.grants if q not in self._grants])
        revoked = {q.grant_id for q in needs.grants if self._grants[q] is GrantStatus.REVOKED}
        unknown = sorted(revoked - self._revocations.keys())
        for grant_id, revocation in zip(
            unknown, self.reader.grant_revocations(unknown), strict=True
        ):
            self._revocations[grant_id] = revocation

    def _fetch_institutions(self, addresses: Sequence[str]) -> None:
        for address, info in zip(addresses, self.reader.institutions(addresses), strict=True):
            self._institutions[address] = info

    def _fetch_histories(self, addresses: Sequence[str]) -> None:
        for address, history in zip(
            addresses, self.reader.institution_histories(addresses), strict=True
        ):
            self._histories[address] = history

    def _fetch_grants(self, queries: Sequence[GrantQuery]) -> None:
        for query, status in zip(queries, self.reader.grant_statuses(queries), strict=True):
            self._grants[query] = status
