"""The assembled service core: store, Merkle log, chain, ingest, anchoring and consent.

:class:`Ledger` is what the API, the CLI and the tests use. It owns no HTTP and no
presentation: it takes typed values and returns typed values.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester
from sqlalchemy import ColumnElement, false, or_, select, true

from ledger import index, merkle
from ledger.anchor import ANCHORED, CONFIRMED, AnchorStatus, AnchorWorker, LogDivergedError
from ledger.chain.client import (
    Chain,
    GrantInfo,
    GrantRequest,
    InstitutionInfo,
    embedded_chain,
    rpc_chain,
)
from ledger.chain.consent import CommittedConsent, ReaderConsent
from ledger.chain.deploy import Deployment, DeploymentMismatch
from ledger.chain.model import ChainError
from ledger.chain.tx import ContractReverted
from ledger.consent import (
    GranteeNotActiveError,
    GrantVersionError,
    SignedGrant,
    check_terms,
    revocation_hash,
    typed_data_v2,
)
from ledger.consent_store import GrantCommitter, StoredGrant, StoredGrants
from ledger.directory import InstitutionDirectory
from ledger.eip712 import Domain
from ledger.errors import LedgerError, ProofError
from ledger.events import (
    EVENT_MODELS,
    EventBase,
    EventType,
    InstitutionKind,
    SignedEvent,
    audit_log_domain,
    consent_domain,
    typed_data_definitions,
)
from ledger.index_store import IndexStore
from ledger.ingest import Ingestor, Receipt, stored_batch
from ledger.log import MerkleLog
from ledger.recursion import cap_recursion_limit
from ledger.redact import redact_error, redactor_for
from ledger.registrations import Registrations
from ledger.rules import GrantSource, GrantStatus
from ledger.settings import ConfigurationError, Settings, parse_key
from ledger.store import Store
from ledger.store.models import CheckpointRow, EventRow, GrantRow, RecordRow
from ledger.verify import BundleReceipt, CheckpointRef, Finding, ProofBundle, verify_bundle
from ledger.visibility import institution_may_see
from ledger.wire import IndexProofOut, ListHeadOut
from ledger.worker import run_worker

log = logging.getLogger("medtrail.service")

#: Bundles the service remembers having verified (a 32-byte key each: a few MiB).
SELF_CHECK_MEMORY = 65_536

_EVENTS = EventRow.__table__  # type: ignore[attr-defined]
_CHECKPOINTS = CheckpointRow.__table__  # type: ignore[attr-defined]

#: What a read is proved against: the checkpoint (None before the first) and the largest
#: confirmed size (:meth:`Ledger.serving_checkpoint`).
ServedAt = tuple[CheckpointRow | None, int]
_GRANTS = GrantRow.__table__  # type: ignore[attr-defined]
_RECORDS = RecordRow.__table__  # type: ignore[attr-defined]

#: The fields by which an event refers to an earlier one (a dispense, a claim, a payment).
_REFERENCES = ("prescriptionId", "serviceRef", "claimId")


class NotFound(LedgerError):
    """The thing asked for does not exist (or is not visible to the caller)."""

    code = "not-found"
    status = 404


class RevocationSecretError(LedgerError):
    """The revocation secret presented is not the grant's (its hash is not the grant's
    ``revocationHash``)."""

    code = "invalid-revocation-secret"


class AnchoringUnavailable(LedgerError):
    """The operator's key may no longer commit checkpoints (its AuditLog role was revoked
    since the service started): events are refused rather than given a receipt promising an
    anchoring that cannot happen. Grant the role back, or configure a key that holds it."""

    code = "anchoring-unavailable"
    status = 503


#: How long the answer to "may the operator still anchor?" is trusted (seconds).
ANCHOR_ROLE_TTL = 30.0


def events_visible_to(institution: str, custodian: str | None) -> ColumnElement[bool]:
    """The SQL form of :func:`ledger.visibility.institution_may_see` over ``events``: which
    events of a record held by ``custodian`` institution ``institution`` may see — every one
    if it is the custodian, else those it signed or is named in (``counterparty``)."""
    if custodian is not None and institution == custodian:
        return true()
    return or_(_EVENTS.c.institution == institution, _EVENTS.c.counterparty == institution)


@dataclass(frozen=True)
class Viewer:
    """Whose view of the log a read takes (:mod:`ledger.visibility`): a regulator (everything),
    a patient (``address``: the events about them) or an institution (``address``: the events
    it took part in, and every event of the records it is the custodian of)."""

    role: str  # regulator | patient | institution
    address: str | None = None


def events_viewable_by(viewer: Viewer) -> ColumnElement[bool]:
    """The SQL form of who sees which event (:mod:`ledger.visibility`), over every record at
    once: :func:`events_visible_to` for a record generalised to the records an institution
    holds as custodian."""
    if viewer.role == "regulator":
        return true()
    if viewer.address is None:  # pragma: no cover - patients and institutions have one
        return false()
    if viewer.role == "patient":
        mine: ColumnElement[bool] = _EVENTS.c.patient == viewer.address
        return mine
    if viewer.role == "institution":
        held = select(_RECORDS.c.record_ref).where(_RECORDS.c.custodian == viewer.address)
        return or_(
            _EVENTS.c.institution == viewer.address,
            _EVENTS.c.counterparty == viewer.address,
            _EVENTS.c.record_ref.in_(held),
        )
    return false()


@dataclass(frozen=True)
class EventSearch:
    """Filters of ``GET /v1/events`` (each None: any). ``occurred_from`` is inclusive,
    ``occurred_to`` exclusive (unix seconds of ``occurredAt``); ``institution`` matches the
    events it took part in: signed, or named in (:func:`ledger.visibility.counterparty`)."""

    record_ref: bytes | None = None
    patient: str | None = None
    institution: str | None = None
    event_type: EventType | None = None
    occurred_from: int | None = None
    occurred_to: int | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.record_ref is not None:
            found.append(_EVENTS.c.record_ref == self.record_ref)
        if self.patient is not None:
            found.append(_EVENTS.c.patient == self.patient)
        if self.institution is not None:
            found.append(
                or_(
                    _EVENTS.c.institution == self.institution,
                    _EVENTS.c.counterparty == self.institution,
                )
            )
        if self.event_type is not None:
            found.append(_EVENTS.c.event_type == self.event_type.value)
        if self.occurred_from is not None:
            found.append(_EVENTS.c.occurred_at >= self.occurred_from)
        if self.occurred_to is not None:
            found.append(_EVENTS.c.occurred_at < self.occurred_to)
        return found


@dataclass(frozen=True)
class EventView:
    """One event as the service sees it: status, consent, and its proof bundle."""

    event_id: bytes
    event_type: str
    institution: str
    patient: str
    record_ref: bytes | None
    status: str  # pending | anchored | confirmed
    consent: str
    received_at: int
    bundle: ProofBundle
    #: What the service's own check of the bundle found (empty when it verifies). Not empty
    #: only if the store was altered behind the service's back: the service says so rather
    #: than serve a proof that silently fails.
    integrity: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class AccessDecision:
    """Whether a grantee may be given a record now, and on which grant (or why not)."""

    permit: bool
    grant_id: int | None
    reason: str


@dataclass(frozen=True)
class GrantV2View:
    """A kept version-2 grant with what the chain says of it now: the block times of its
    commitment and of its revocation (None: not on chain), and its status — ``revoked`` once
    revoked (before its commitment too: that voids it), ``pending`` until committed,
    ``expired`` past ``expiresAt`` or when it can no longer be committed in time (its
    deadline passed, or it was committed after it), else ``active``."""

    stored: StoredGrant
    committed_at: int | None
    revoked_at: int | None
    status: str  # pending | active | revoked | expired

    @property
    def grant(self) -> SignedGrant:
        return self.stored.grant

    @property
    def grant_id(self) -> int:
        return self.stored.grant_id

    @property
    def patient(self) -> str:
        return self.grant.patient

    @property
    def grantee(self) -> str:
        return self.grant.grantee


def grant_v2_status(grant: SignedGrant, committed_at: int, revoked_at: int, now: int) -> str:
    """:attr:`GrantV2View.status` from the chain's block times (0: none) at ``now``."""
    if revoked_at:
        return "revoked"
    if committed_at:
        if committed_at > grant.deadline or now >= grant.expires_at:
            return "expired"
        return "active"
    if grant.deadline < now or now >= grant.expires_at:
        return "expired"
    return "pending"


@dataclass(frozen=True)
class RecordParties:
    """Who a record concerns: its patient and its custodian (for the API's authorization
    checks; :meth:`Ledger.took_part` tells whether another institution took part in it)."""

    record_ref: bytes
    patient: str
    custodian: str | None


class BoundedSet:
    """A thread-safe set of at most ``size`` keys; the oldest added goes first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._keys: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: bytes) -> None:
        with self._lock:
            self._keys[key] = None
            while len(self._keys) > self._size:
                self._keys.popitem(last=False)


_K = TypeVar("_K")
_V = TypeVar("_V")


class BoundedCache(Generic[_K, _V]):
    """A thread-safe mapping of at most ``size`` entries; the least recently used goes first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: _K) -> _V | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: _K, value: _V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


#: Index answers kept per (key, checkpoint size): the pages of a trail, and the API's
#: ``verify=true`` on each of them, read the key's list once per checkpoint.
INDEX_ANSWERS_CACHED = 1024


def _served_key(row: Any, bundle: ProofBundle, checkpoint: bytes) -> bytes:
    """A digest of everything :func:`ledger.verify.verify_bundle` reads of a served bundle:
    the stored event (type, body, signature, digest, leaf index) and its proof (the
    checkpoint it names, serialised as ``checkpoint``, and the path)."""
    h = hashlib.sha256()
    for part in (
        row.event_type.encode(),
        row.body.encode(),
        bytes(row.signature),
        bytes(row.digest),
        b"%d/%d" % (row.leaf_index, bundle.treeSize),
        checkpoint if bundle.checkpoint is not None else b"-",
        *bundle.inclusionPath,
    ):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


class Ledger:
    """medtrail's service core. Build it with :meth:`open`; :meth:`close` when done."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        chain: Chain,
        operator: LocalAccount,
        registrar: LocalAccount | None,
        tester: EthereumTester | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.chain = chain
        self.operator = operator
        self.registrar = registrar
        self.tester = tester
        self.deployment: Deployment = chain.deployment
        self.domain: Domain = audit_log_domain(self.deployment.chain_id, self.deployment.audit_log)
        self.consent_domain: Domain = consent_domain(
            self.deployment.chain_id, self.deployment.consent_registry
        )
        self.log = MerkleLog(store)
        #: The verifiable index, as stored (the anchor worker keeps it up).
        self.index = IndexStore(store)
        self._index_answers: BoundedCache[tuple[bytes, int, bytes], IndexProofOut] = BoundedCache(
            INDEX_ANSWERS_CACHED
        )
        self.directory = InstitutionDirectory(chain, ttl=settings.institution_cache_ttl)
        #: Consent version 2 (None: a version-1-only deployment): the signed grants kept, and
        #: their committer (run by the anchor worker's loop).
        self.consent_v2_domain: Domain | None = None
        self.stored_grants: StoredGrants | None = None
        self.committer: GrantCommitter | None = None
        grants: GrantSource = chain
        if chain.consent_v2 is not None:
            self.consent_v2_domain = chain.consent_v2.domain
            self.stored_grants = StoredGrants(store, self.consent_v2_domain)
            self.committer = GrantCommitter(self.stored_grants, chain)
            # Asked through the chain's lean JSON-RPC reader, a batch's accesses at once
            # (web3's contract calls cost ~2.7 ms of CPU each, issue 15).
            judge = ReaderConsent(chain, chain.consent_v2.address, check=False)
            grants = CommittedConsent(judge, self.stored_grants, version_1=chain)
        #: The registered institutions in registration order (``GET /v1/institutions``).
        self.registrations = Registrations(
            chain, self.deployment.block_number, ttl=settings.institution_cache_ttl
        )
        self.ingestor = Ingestor(
            store,
            self.domain,
            bytes(operator.key),
            self.directory,
            grants,
            max_batch=settings.max_batch,
            max_future_skew=settings.max_future_skew,
            max_backdate=settings.max_backdate,
            max_merge_delay=settings.max_merge_delay,
        )
        self.anchor = AnchorWorker(
            store,
            self.log,
            chain,
            interval=settings.anchor_interval,
            batch_events=settings.anchor_batch,
            confirmations=settings.required_confirmations,
            tx_timeout=settings.tx_timeout,
        )
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        #: Whether the operator's key may still anchor, when that was last asked, and how long
        #: the answer stands (seconds).
        self._may_anchor = True
        self._role_checked_at = float("-inf")
        self.role_ttl = ANCHOR_ROLE_TTL
        #: Bundles served and found sound (see :meth:`_self_check`).
        self._verified = BoundedSet(SELF_CHECK_MEMORY)

    # -- life cycle -----------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings | None = None) -> Ledger:
        """Connect the store and the chain, migrate, and check they belong together.

        First lowers the interpreter's recursion limit, which the chain libraries raised at
        import, to what the native stacks hold (:mod:`ledger.recursion`)."""
        cap_recursion_limit()
        settings = settings or Settings()
        store = Store(
            settings.database_url,
            write_cache_mib=settings.sqlite_write_cache_mib,
            wal_autocheckpoint=settings.sqlite_wal_autocheckpoint,
        )
        store.migrate()
        tester: EthereumTester | None = None
        if settings.mode == "embedded":
            operator: LocalAccount = (
                Account.from_key(parse_key(settings.operator_key, "MEDTRAIL_OPERATOR_KEY"))
                if settings.operator_key
                else Account.create()
            )
            registrar: LocalAccount | None = (
                Account.from_key(parse_key(settings.registrar_key, "MEDTRAIL_REGISTRAR_KEY"))
                if settings.registrar_key
                else Account.create()
            )
            assert registrar is not None
            chain, tester = embedded_chain(
                operator, registrar, consent_v2=settings.embedded_consent_v2
            )
        else:
            assert settings.rpc_url is not None
            assert settings.operator_key is not None
            operator = Account.from_key(parse_key(settings.operator_key, "MEDTRAIL_OPERATOR_KEY"))
            registrar = (
                Account.from_key(parse_key(settings.registrar_key, "MEDTRAIL_REGISTRAR_KEY"))
                if settings.registrar_key
                else None
            )
            deployment = Deployment.read(settings.deployment_file)
            try:
                chain = rpc_chain(
                    settings.rpc_url, deployment, operator, registrar, timeout=settings.rpc_timeout
                )
            except LedgerError as exc:
                # The node's errors repeat the RPC URL, whose path or user-info may hold the
                # provider's key: the message names the endpoint by its origin only.
                redact_error(exc, redactor_for(settings))
                raise
        unbound = cls._bind_store(store, chain.deployment, settings)
        if settings.mode == "rpc":
            try:
                cls._check_roles(chain, operator, registrar)
            except LedgerError as exc:
                redact_error(exc, redactor_for(settings))
                raise
        ledger = cls(settings, store, chain, operator, registrar, tester)
        ledger._check_log_against_chain()
        if unbound:
            # Only now that every check passed: a failed first start leaves the store free
            # for the next attempt, with the right keys or another chain.
            store.set_meta("deployment", chain.deployment.model_dump_json())
        ledger.catch_up_clock()
        return ledger

    def catch_up_clock(self, limit: float = 30.0) -> None:
        """Embedded mode: wait until the wall clock reaches the chain's latest block time.

        py-evm gives every block a time at least one second after its parent's, so a burst
        of transactions (deployment, registrations) puts the in-process chain's clock ahead
        of the wall clock; events stamped "now" would then seem to predate, say, their
        signer's registration. Real chains do not run ahead; nothing to do there.
        """
        if self.tester is None or not self.settings.embedded_clock_sync:
            return
        deadline = time.monotonic() + limit
        while self.chain.latest_timestamp() > time.time() and time.monotonic() < deadline:
            time.sleep(0.05)

    @staticmethod
    def _check_roles(chain: Chain, operator: LocalAccount, registrar: LocalAccount | None) -> None:
        """Refuse to start with keys the contracts do not accept: an operator that cannot
        commit checkpoints would sign receipts promising an anchoring that never comes (and
        its anchor worker would fail forever); a registrar key without the role would fail
        every registration."""
        deployment = chain.deployment
        if not chain.is_log_operator(operator.address):
            raise ConfigurationError(
                f"MEDTRAIL_OPERATOR_KEY is the key of {operator.address}, which does not hold "
                f"LOG_OPERATOR_ROLE on the AuditLog at {deployment.audit_log} (chain "
                f"{deployment.chain_id}): it could not anchor checkpoints, so the service will "
                "not start and promise it. Grant the role to that address, or configure the "
                "operator key the deployment was made for."
            )
        if registrar is not None and not chain.is_registrar(registrar.address):
            raise ConfigurationError(
                f"MEDTRAIL_REGISTRAR_KEY is the key of {registrar.address}, which does not hold "
                f"REGISTRAR_ROLE on the InstitutionRegistry at {deployment.institution_registry}"
                f" (chain {deployment.chain_id}). Grant the role to that address, configure a "
                "registrar's key, or leave MEDTRAIL_REGISTRAR_KEY unset (the admin API then "
                "answers 503 to registrations)."
            )

    @staticmethod
    def _bind_store(store: Store, deployment: Deployment, settings: Settings) -> bool:
        """A store belongs to one deployment; refuse to mix logs and chains. True when the
        store belongs to none yet: :meth:`open` binds it once the start-up succeeded."""
        recorded = store.get_meta("deployment")
        if recorded is None:
            return True
        theirs = Deployment.model_validate_json(recorded)
        if theirs == deployment:  # either spelling
            return False
        if theirs.consent_registry_v2 is None and theirs == deployment.model_copy(
            update={"consent_registry_v2": None}
        ):
            # The same log and contracts, with consent version 2 added (docs/upgrading.md):
            # recorded anew once the start-up succeeded.
            return True
        hint = (
            " The embedded chain is new at every start: use a new database "
            "(or `medtrail serve --reset`)."
            if settings.mode == "embedded"
            else " Point MEDTRAIL_DATABASE_URL and MEDTRAIL_DEPLOYMENT_FILE at the same log."
        )
        raise DeploymentMismatch(
            f"the store at {store.url.render_as_string(hide_password=True)} belongs to the "
            f"contracts at AuditLog {theirs.audit_log} on chain {theirs.chain_id}, but the chain "
            f"holds AuditLog {deployment.audit_log} on chain {deployment.chain_id}.{hint}"
        )

    def _check_log_against_chain(self) -> None:
        latest = self.chain.latest_checkpoint()
        if latest is None:
            return
        self.log.integrate_all()
        head = self.log.head()
        if latest.tree_size > head.size or self.log.root_at(latest.tree_size) != latest.root_hash:
            raise LogDivergedError(
                f"the chain's latest checkpoint (size {latest.tree_size}) is not this store's "
                "log: refusing to start rather than diverge from the chain"
            )

    def start_worker(self, *, poll: float = 0.5) -> None:
        """Run the sequencer/anchor worker in a background thread (one active per log)."""
        if self._worker is not None:
            return
        self._stop.clear()
        also = () if self.committer is None else (("grant commit", self.committer.step),)
        self._worker = threading.Thread(
            target=run_worker,
            args=(self.anchor, self._stop),
            kwargs={"poll": poll, "also": also},
            name="medtrail-anchor",
            daemon=True,
        )
        self._worker.start()

    def stop_worker(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None

    def close(self) -> None:
        self.stop_worker()
        self.store.dispose()

    def anchor_now(self) -> AnchorStatus:
        """One anchoring pass now, due or not (tests, demo, operators)."""
        return self.anchor.step(force=True)

    # -- typed data -----------------------------------------------------------------------

    def typed_data(self) -> dict[str, Any]:
        document = typed_data_definitions(
            self.deployment.chain_id, self.deployment.audit_log, self.deployment.consent_registry
        )
        if self.consent_v2_domain is not None:
            document["consentV2"] = typed_data_v2(self.consent_v2_domain)
        return document

    # -- ingest ---------------------------------------------------------------------------

    def submit(
        self, batch: Sequence[SignedEvent], *, before_commit: Callable[[], None] | None = None
    ) -> list[Receipt]:
        """:meth:`Ingestor.submit <ledger.ingest.Ingestor.submit>`, once the operator's key is
        known to hold the anchoring role."""
        self._check_may_anchor()
        return self.ingestor.submit(batch, before_commit=before_commit)

    def _check_may_anchor(self) -> None:
        """Refuse to promise anchoring when the chain says the operator's key may not anchor
        (checked at most every :data:`ANCHOR_ROLE_TTL` seconds; while the chain does not
        answer, the last answer stands: ingest goes on while the node is down)."""
        now = time.monotonic()
        if now - self._role_checked_at >= self.role_ttl:
            with suppress(ChainError):  # if not answered: asked again after another ttl,
                self._may_anchor = self.chain.is_log_operator(self.operator.address)
            self._role_checked_at = now  # not at every batch (each waits for the timeout)
        if not self._may_anchor:
            raise AnchoringUnavailable(
                f"MEDTRAIL_OPERATOR_KEY ({self.operator.address}) no longer holds the "
                "AuditLog's LOG_OPERATOR_ROLE: events are refused rather than promised an "
                "anchoring that cannot happen",
                operator=self.operator.address,
            )

    # -- reads ----------------------------------------------------------------------------

    def serving_checkpoint(self) -> ServedAt:
        """The checkpoint proofs are served against now (the latest mined one), and the largest
        confirmed size. A request reads it once and passes it to every read it makes (events,
        index proof), so that all its parts are proved against the same checkpoint even if
        another lands meanwhile."""
        return self._anchor_checkpoint()

    def _anchor_checkpoint(self) -> ServedAt:
        """The checkpoint proofs are served against (the latest mined one), and the largest
        confirmed size."""
        with self.store.read() as connection:
            rows = connection.execute(
                select(_CHECKPOINTS)
                .where(_CHECKPOINTS.c.status.in_((ANCHORED, CONFIRMED)))
                .order_by(_CHECKPOINTS.c.tree_size.desc())
            ).mappings()
            best: CheckpointRow | None = None
            confirmed = 0
            for row in rows:
                checkpoint = CheckpointRow.model_validate(dict(row))
                if best is None:
                    best = checkpoint
                if checkpoint.status == CONFIRMED:
                    confirmed = checkpoint.tree_size
                    break
        return best, confirmed

    def _views(self, rows: Sequence[Any], served_at: ServedAt | None = None) -> list[EventView]:
        checkpoint, confirmed = served_at if served_at is not None else self._anchor_checkpoint()
        ref = None
        if checkpoint is not None:
            ref = CheckpointRef(
                treeSize=checkpoint.tree_size,
                rootHash=bytes(checkpoint.root),
                chainId=self.deployment.chain_id,
                auditLog=self.deployment.audit_log,
                transactionHash=bytes(checkpoint.tx_hash) if checkpoint.tx_hash else None,
                blockNumber=checkpoint.block_number,
            )
        tree_size = ref.treeSize if ref is not None else 0
        ref_json = ref.model_dump_json().encode() if ref is not None else b""
        anchored_rows = [row.leaf_index for row in rows if row.leaf_index < tree_size]
        paths = dict(
            zip(anchored_rows, self.log.inclusion_proofs(anchored_rows, tree_size), strict=True)
        )
        views = []
        for row in rows:
            event = EVENT_MODELS[EventType(row.event_type)].model_validate_json(row.body)
            path = paths.get(row.leaf_index)
            anchored = path is not None
            if anchored:
                status = "confirmed" if row.leaf_index < confirmed else "anchored"
            else:
                path, status = [], "pending"
            place = stored_batch(
                row.receipt_batch_first,
                row.receipt_batch_count,
                row.receipt_batch_root,
                row.receipt_path,
            )
            bundle = ProofBundle(
                event=SignedEvent(
                    type=EventType(row.event_type), event=event, signature=bytes(row.signature)
                ),
                eventDigest=bytes(row.digest),
                leafIndex=row.leaf_index,
                treeSize=tree_size if anchored else 0,
                inclusionPath=path,
                checkpoint=ref if anchored else None,
                receipt=BundleReceipt(
                    receivedAt=row.received_at,
                    anchorBy=row.anchor_by,
                    signature=bytes(row.receipt_signature),
                    batch=None if place is None else place.proof(),
                ),
                consent=row.consent_status,
            )
            views.append(
                EventView(
                    integrity=self._self_check(bundle, _served_key(row, bundle, ref_json)),
                    event_id=bytes(row.event_id),
                    event_type=row.event_type,
                    institution=row.institution,
                    patient=row.patient,
                    record_ref=bytes(row.record_ref) if row.record_ref else None,
                    status=status,
                    consent=row.consent_status,
                    received_at=row.received_at,
                    bundle=bundle,
                )
            )
        return views

    def _self_check(self, bundle: ProofBundle, key: bytes) -> tuple[Finding, ...]:
        """Verify a bundle against the stored checkpoint it names, as a regulator would.

        A bundle that verified is remembered by ``key``, a digest of everything the check
        reads (see :func:`_served_key`): serving it again, byte for byte, needs no second
        check, while any change to what the store holds for it changes the key. Failures
        are not remembered: they are checked, and logged, on every read.
        """
        if key in self._verified:
            return ()
        if bundle.checkpoint is not None:
            findings = verify_bundle(
                bundle,
                domain=self.domain,
                trusted_size=bundle.checkpoint.treeSize,
                trusted_root=bundle.checkpoint.rootHash,
            )
        else:
            findings = verify_bundle(
                bundle, domain=self.domain, trusted_size=0, trusted_root=merkle.EMPTY_ROOT
            )
        errors = tuple(f for f in findings if f.severity == "error")
        if errors:
            log.error(
                "event 0x%s fails its own verification (%s): the store was altered",
                bundle.event.event_id.hex(),
                ", ".join(f.code for f in errors),
            )
        else:
            self._verified.add(key)
        return errors

    def event(self, event_id: bytes, institution: str | None = None) -> EventView:
        """One event with its proof bundle. Read as ``institution`` (:mod:`ledger.visibility`),
        an event it may not see is :class:`NotFound`, before any proof is built."""
        with self.store.read() as connection:
            row = connection.execute(select(_EVENTS).where(_EVENTS.c.event_id == event_id)).first()
            visible = row is not None and (
                institution is None
                or institution_may_see(
                    institution,
                    row.institution,
                    row.counterparty,
                    self._custodian(connection, row.record_ref),
                )
            )
        if row is None or not visible:
            raise NotFound(f"no event 0x{event_id.hex()}")
        return self._views([row])[0]

    @staticmethod
    def _custodian(connection: Any, record_ref: bytes | None) -> str | None:
        if record_ref is None:
            return None
        custodian: str | None = connection.execute(
            select(_RECORDS.c.custodian).where(_RECORDS.c.record_ref == record_ref)
        ).scalar()
        return custodian

    def trail(
        self,
        record_ref: bytes,
        institution: str | None = None,
        after: int = -1,
        limit: int | None = None,
        served_at: ServedAt | None = None,
    ) -> list[EventView]:
        """The events about a record, in log order (accesses, prescriptions and what refers
        to them: dispenses, claims, payments): those after leaf ``after``, at most ``limit``
        (None: all of them — for callers in process; the API always pages).

        Read as ``institution`` (:mod:`ledger.visibility`): the record's custodian sees every
        event, another institution only the events it took part in (filtered in SQL, so a
        page is one bounded query). ``None``: every event (regulators, the record's patient).
        """
        with self.store.read() as connection:
            query = select(_EVENTS).where(
                _EVENTS.c.record_ref == record_ref, _EVENTS.c.leaf_index > after
            )
            if institution is not None:
                custodian = self._custodian(connection, record_ref)
                query = query.where(events_visible_to(institution, custodian))
            query = query.order_by(_EVENTS.c.leaf_index)
            if limit is not None:
                query = query.limit(limit)
            rows = connection.execute(query).all()
        return self._views(rows, served_at)

    def rule_context(self, views: Sequence[EventView]) -> list[tuple[int, EventBase]]:
        """What the rules look back at to judge ``views`` (a page of a trail, or one
        institution's part of it) that is not among them: ``(leaf index, event)`` in log
        order, all before the last of ``views``.

        That is the first events of their record (which fix its patient and custodian), the
        events they refer to (a dispense's prescription, a claim's service, a payment's claim)
        and the other events that refer to those (earlier fills of the prescription, claims of
        the service, payments of the claim). A few indexed queries, bounded by the page: the
        rules judge a page as they would the whole trail, without reading all of it.
        """
        if not views:
            return []
        served = {view.bundle.leafIndex for view in views}
        last = max(served)
        refs = {
            ref
            for view in views
            for ref in (getattr(view.bundle.event.event, name, None) for name in _REFERENCES)
            if isinstance(ref, bytes)
        }
        records = {view.record_ref for view in views if view.record_ref is not None}
        record_types = (EventType.RECORD_ACCESS.value, EventType.PRESCRIPTION_ISSUED.value)
        rows: dict[int, Any] = {}
        with self.store.read() as connection:
            for record_ref in records:
                for types in (record_types, record_types[:1]):
                    first = connection.execute(
                        select(_EVENTS)
                        .where(
                            _EVENTS.c.record_ref == record_ref,
                            _EVENTS.c.event_type.in_(types),
                            _EVENTS.c.leaf_index < last,
                        )
                        .order_by(_EVENTS.c.leaf_index)
                        .limit(1)
                    ).first()
                    if first is not None:
                        rows[first.leaf_index] = first
            if refs:
                for row in connection.execute(
                    select(_EVENTS).where(
                        _EVENTS.c.leaf_index < last,
                        or_(_EVENTS.c.event_id.in_(refs), _EVENTS.c.ref_event_id.in_(refs)),
                    )
                ):
                    rows[row.leaf_index] = row
        return [
            (leaf, EVENT_MODELS[EventType(row.event_type)].model_validate_json(row.body))
            for leaf, row in sorted(rows.items())
            if leaf not in served
        ]

    def accesses_of(
        self,
        patient: str,
        after: int = -1,
        limit: int | None = None,
        served_at: ServedAt | None = None,
    ) -> list[EventView]:
        """The RecordAccess events about ``patient``, in log order: those after leaf
        ``after``, at most ``limit`` (None: all)."""
        with self.store.read() as connection:
            query = (
                select(_EVENTS)
                .where(
                    _EVENTS.c.patient == patient,
                    _EVENTS.c.event_type == EventType.RECORD_ACCESS.value,
                    _EVENTS.c.leaf_index > after,
                )
                .order_by(_EVENTS.c.leaf_index)
            )
            if limit is not None:
                query = query.limit(limit)
            rows = connection.execute(query).all()
        return self._views(rows, served_at)

    # -- the verifiable index ---------------------------------------------------------------

    def record_index(
        self, record_ref: bytes, served_at: ServedAt | None = None
    ) -> IndexProofOut | None:
        """The index's answer for a record at the checkpoint bundles are served against (the
        request's ``served_at``, else the latest mined): the leaf indexes of all its events
        (its own and those chained to it) and their lookup proof (:meth:`_index_proof`)."""
        key, clause = index.record_key(record_ref), _EVENTS.c.record_ref == record_ref
        return self._index_proof(key, clause, served_at)

    def patient_index(
        self, patient: str, served_at: ServedAt | None = None
    ) -> IndexProofOut | None:
        """The index's answer for a patient (every event about them): see
        :meth:`record_index`."""
        key, clause = index.patient_key(patient), _EVENTS.c.patient == patient
        return self._index_proof(key, clause, served_at)

    def _index_proof(
        self, key: bytes, clause: ColumnElement[bool], served_at: ServedAt | None
    ) -> IndexProofOut | None:
        """The list of ``key`` at the latest mined checkpoint — read from the events table
        (``clause`` selects the key's events) — and its lookup proof from the stored index.

        None before the first checkpoint with an index root, or when the stored index cannot
        answer (logged: a regulator's tools then report the proof missing). The answer is
        checked against the checkpoint's index root before it is served; one that fails (a
        row deleted or changed behind the service's back) is logged and served as it is,
        for the clients to report. An answer that verified is kept per (key, checkpoint), as
        it never changes: the pages of one list read it once."""
        checkpoint, _confirmed = served_at if served_at is not None else self._anchor_checkpoint()
        if checkpoint is None or checkpoint.index_root is None:
            return None
        size, index_root = checkpoint.tree_size, bytes(checkpoint.index_root)
        cached = self._index_answers.get((key, size, index_root))
        if cached is not None:
            return cached
        try:
            with self.store.read() as connection:
                version = self.index.version(size, connection)
                if version is None:
                    log.error("the store holds no index at checkpoint %d", size)
                    return None
                leaves = list(
                    connection.execute(
                        select(_EVENTS.c.leaf_index)
                        .where(clause, _EVENTS.c.leaf_index < size)
                        .order_by(_EVENTS.c.leaf_index)
                    ).scalars()
                )
                proof = self.index.lookup(key, version, connection)
        except merkle.MissingNodeError as exc:
            log.error("the stored index cannot answer at checkpoint %d: %s", size, exc.detail)
            return None
        try:
            head = index.verify_list_lookup(key, leaves, size, proof, index_root)
            verified = True
        except ProofError as exc:
            verified = False
            log.error(
                "an index answer at checkpoint %d fails its own verification (%s): the store "
                "was altered",
                size,
                exc.detail,
            )
            head = index.list_head(leaves)
        answer = IndexProofOut(
            key=key,
            treeSize=size,
            indexRoot=index_root,
            leafIndexes=leaves,
            head=ListHeadOut(size=head.size, root=head.root),
            proof=proof.to_bytes(),
        )
        if verified:  # a checkpoint's answer never changes; one that failed is read again
            self._index_answers.put((key, size, index_root), answer)
        return answer

    def search_events(
        self,
        search: EventSearch,
        visible_to: Viewer,
        after: int = -1,
        limit: int | None = None,
        served_at: ServedAt | None = None,
    ) -> list[EventView]:
        """The events matching ``search`` that ``visible_to`` may see, in log order: those
        after leaf ``after``, at most ``limit`` (None: all). One bounded SQL query: the
        caller's view (:func:`events_viewable_by`) and the filters are both ``WHERE``
        clauses, so a filter narrows what the caller sees and never reaches past it."""
        query = select(_EVENTS).where(
            events_viewable_by(visible_to), *search.clauses(), _EVENTS.c.leaf_index > after
        )
        query = query.order_by(_EVENTS.c.leaf_index)
        if limit is not None:
            query = query.limit(limit)
        with self.store.read() as connection:
            rows = connection.execute(query).all()
        return self._views(rows, served_at)

    def institutions(
        self, after: str | None = None, limit: int = 100, kind: InstitutionKind | None = None
    ) -> list[InstitutionInfo]:
        """The registered institutions in registration order, as the chain holds them now:
        those after the institution ``after``, at most ``limit``, of ``kind`` (None: any)."""
        return self.registrations.page(after, limit, kind)

    def entries(self, start: int, limit: int) -> list[Any]:
        """Raw log entries ``[start, start + limit)`` for mirroring (rows, in leaf order)."""
        with self.store.read() as connection:
            return list(
                connection.execute(
                    select(_EVENTS)
                    .where(_EVENTS.c.leaf_index >= start)
                    .order_by(_EVENTS.c.leaf_index)
                    .limit(limit)
                ).all()
            )

    def checkpoints(self, after: int = -1, limit: int | None = None) -> list[CheckpointRow]:
        """The checkpoints the operator made, by tree size: those larger than ``after``, at
        most ``limit`` (None: all)."""
        with self.store.read() as connection:
            query = (
                select(_CHECKPOINTS)
                .where(_CHECKPOINTS.c.tree_size > after)
                .order_by(_CHECKPOINTS.c.tree_size)
            )
            if limit is not None:
                query = query.limit(limit)
            rows = connection.execute(query).mappings()
            return [CheckpointRow.model_validate(dict(r)) for r in rows]

    def latest_checkpoint(self) -> CheckpointRow | None:
        """The largest checkpoint mined on chain (``anchored`` or ``confirmed``), if any."""
        with self.store.read() as connection:
            row = (
                connection.execute(
                    select(_CHECKPOINTS)
                    .where(_CHECKPOINTS.c.status.in_((ANCHORED, CONFIRMED)))
                    .order_by(_CHECKPOINTS.c.tree_size.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return CheckpointRow.model_validate(dict(row)) if row is not None else None

    # -- institutions (regulator) ---------------------------------------------------------

    def register_institution(self, address: str, kind: InstitutionKind, name: str) -> bytes:
        tx = self.chain.register_institution(address, kind, name)
        self.directory.invalidate(address)
        self.registrations.invalidate()
        self.catch_up_clock()
        return tx

    def suspend_institution(self, address: str) -> bytes:
        tx = self.chain.suspend_institution(address)
        self.directory.invalidate(address)
        self.catch_up_clock()
        return tx

    def reinstate_institution(self, address: str) -> bytes:
        tx = self.chain.reinstate_institution(address)
        self.directory.invalidate(address)
        self.catch_up_clock()
        return tx

    # -- consent --------------------------------------------------------------------------

    def _cache_grant(self, info: GrantInfo, tx_hash: bytes | None) -> None:
        with self.store.write() as connection:
            connection.execute(_GRANTS.delete().where(_GRANTS.c.grant_id == info.grant_id))
            connection.execute(
                _GRANTS.insert().values(
                    grant_id=info.grant_id,
                    patient=info.patient,
                    grantee=info.grantee,
                    record_ref=info.record_ref,
                    purposes=info.purposes,
                    not_before=info.not_before,
                    expires_at=info.expires_at,
                    created_at=info.created_at,
                    revoked_at=info.revoked_at,
                    tx_hash=tx_hash,
                )
            )

    def relay_grant(
        self, patient: str, request: GrantRequest, deadline: int, signature: bytes
    ) -> GrantInfo:
        """Relay a patient-signed grant to the ConsentRegistry (the operator pays); a
        deployment with consent version 2 takes no new version-1 grant."""
        self.refuse_v1_grant()
        grant_id, tx_hash = self.chain.relay_grant(patient, request, deadline, signature)
        self.catch_up_clock()
        info = self.grant(grant_id)
        self._cache_grant(info, tx_hash)
        return info

    def relay_revoke(
        self, patient: str, grant_id: int, deadline: int, signature: bytes
    ) -> GrantInfo:
        tx_hash = self.chain.relay_revoke(patient, grant_id, deadline, signature)
        self.catch_up_clock()
        info = self.grant(grant_id)
        self._cache_grant(info, tx_hash)
        return info

    def relay_increase_nonce(
        self, patient: str, new_nonce: int, deadline: int, signature: bytes
    ) -> bytes:
        return self.chain.relay_increase_nonce(patient, new_nonce, deadline, signature)

    def grant(self, grant_id: int) -> GrantInfo:
        info = self.chain.grant(grant_id)
        if info is None:
            raise NotFound(f"no grant {grant_id}")
        return info

    # -- consent version 2 ------------------------------------------------------------------

    @property
    def takes_v2(self) -> bool:
        """Whether new grants are version 2's (the deployment has a ConsentRegistryV2)."""
        return self.stored_grants is not None

    def refuse_v1_grant(self) -> None:
        """:class:`GrantVersionError` when new grants must be version 2's."""
        if self.stored_grants is not None:
            raise GrantVersionError(
                "this deployment takes version-2 grants (ConsentRegistryV2 at "
                f"{self.deployment.consent_registry_v2}): sign the grant in the domain "
                "`consentV2` of GET /v1/typed-data",
                consentRegistryV2=self.deployment.consent_registry_v2,
            )

    def _grants_v2(self) -> StoredGrants:
        if self.stored_grants is None:
            raise GrantVersionError(
                "this deployment takes version-1 grants only (it has no ConsentRegistryV2)"
            )
        return self.stored_grants

    def accept_grant_v2(self, grant: SignedGrant) -> tuple[GrantV2View, bool]:
        """Check a version-2 grant the patient signed and keep it for the committer:
        :class:`~ledger.consent.GrantTermsError` for terms that could never cover an access,
        :class:`GranteeNotActiveError` for a grantee that is not an active institution,
        :class:`~ledger.errors.SignatureError` unless the patient signed it (key, or ERC-1271
        wallet). ``(view, new)``: ``new`` False for a grant kept before (answered as is)."""
        stored_grants = self._grants_v2()
        assert self.consent_v2_domain is not None
        existing = stored_grants.get(grant.commitment(self.consent_v2_domain))
        if existing is not None:
            return self.grant_v2_views([existing])[0], False
        now = self.chain.latest_timestamp()
        check_terms(
            purposes=grant.purposes,
            not_before=grant.not_before,
            expires_at=grant.expires_at,
            deadline=grant.deadline,
            now=now,
        )
        grantee = self.chain.institution(grant.grantee)
        if not (grantee.registered and grantee.active):
            raise GranteeNotActiveError(
                f"the grantee {grant.grantee} is not an active registered institution "
                f"({'suspended' if grantee.registered else 'not registered'})",
                grantee=grant.grantee,
            )
        self.chain.check_grant_signature(
            grant.patient, grant.digest(self.consent_v2_domain), grant.signature
        )
        stored, new = stored_grants.add(grant, int(time.time()))
        return self.grant_v2_views([stored])[0], new

    def grant_v2(self, grant_id: int) -> GrantV2View | None:
        """The kept version-2 grant ``grant_id`` and its state on chain; None if not kept."""
        if self.stored_grants is None:
            return None
        stored = self.stored_grants.by_id(grant_id)
        return None if stored is None else self.grant_v2_views([stored])[0]

    def grants_v2_of(
        self,
        patient: str,
        grantee: str | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[GrantV2View]:
        """The patient's version-2 grants (to ``grantee``; None: to anyone) with an id above
        ``after``, by id, at most ``limit``; their state read from the chain in one batch."""
        stored = self._grants_v2().of_patient(patient, grantee, after, limit)
        return self.grant_v2_views(stored)

    def grant_v2_views(self, stored: Sequence[StoredGrant]) -> list[GrantV2View]:
        """What the chain says of each kept grant now (two batched reads for all)."""
        times = self.chain.grant_v2_times([(s.commitment, s.grant.revocation_hash) for s in stored])
        now = self.chain.latest_timestamp()
        views = []
        for kept, (committed_at, revoked_at) in zip(stored, times, strict=True):
            status = grant_v2_status(kept.grant, committed_at, revoked_at, now)
            views.append(GrantV2View(kept, committed_at or None, revoked_at or None, status))
        return views

    def revoke_v2(self, view: GrantV2View, secret: bytes) -> GrantV2View:
        """Relay ``revoke(secret)`` for a kept grant (the operator pays); a grant revoked
        already (by the patient straight on chain, say) is answered as it is.
        :class:`RevocationSecretError` unless ``secret`` is the grant's."""
        if revocation_hash(secret) != view.grant.revocation_hash:
            raise RevocationSecretError(
                "the secret is not this grant's: keccak256(secret) differs from its revocationHash"
            )
        if view.revoked_at is None:
            try:
                self.chain.relay_revoke_v2(secret)
            except ContractReverted as exc:
                if exc.error != "AlreadyRevoked":  # revoked meanwhile: fine
                    raise
            self.catch_up_clock()
        return self.grant_v2_views([view.stored])[0]

    def commit_grants_now(self) -> int:
        """One committer tick now (tests, demo): the number of commitments sent."""
        return 0 if self.committer is None else self.committer.step()

    def grants_of(
        self,
        patient: str,
        grantee: str | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[GrantInfo | GrantV2View]:
        """:meth:`grants_v1_of`, then (ids above every version-1 id: 256-bit commitments) the
        patient's version-2 grants by id (:meth:`grants_v2_of`), one page of both."""
        found: list[GrantInfo | GrantV2View] = list(
            self.grants_v1_of(patient, grantee, after, limit)
        )
        if self.stored_grants is not None and (limit is None or len(found) < limit):
            rest = None if limit is None else limit - len(found)
            found.extend(self.grants_v2_of(patient, grantee, after, rest))
        return found

    def grants_v1_of(
        self,
        patient: str,
        grantee: str | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[GrantInfo]:
        """The grants ``patient`` made (revoked ones included), by id, as the chain holds them
        now: those with an id above ``after``, made to ``grantee`` (None: to anyone), at most
        ``limit`` (None: all). Only the grants of the page are read from the chain."""
        found: list[GrantInfo] = []
        for grant_id in self.chain.grant_ids_of(patient):
            if grant_id <= after:
                continue
            if limit is not None and len(found) >= limit:
                break
            info = self.chain.grant(grant_id)
            if info is not None and (grantee is None or info.grantee == grantee):
                found.append(info)
        return found

    def access_decision(
        self, grantee: str, patient: str, record_ref: bytes, purpose: int, at: int
    ) -> AccessDecision:
        """Permit (naming the grant) or deny (naming why) a release of a record to ``grantee``.

        Refuses by default: with no grant to rely on, the answer is deny.
        """
        best: GrantStatus | None = None
        candidates: list[int] = [i.grant_id for i in self.grants_v1_of(patient, grantee)]
        if self.stored_grants is not None:
            candidates += [s.grant_id for s in self.stored_grants.of_patient(patient, grantee)]
        for grant_id in candidates:
            status = GrantStatus(
                int(
                    self.ingestor.grants.grant_status_at(
                        grant_id, patient, grantee, record_ref, purpose, at
                    )
                )
            )
            if status is GrantStatus.VALID:
                return AccessDecision(True, grant_id, "covered")
            if best is None or status > best:
                best = status
        reason = "no-grant" if best is None else best.label
        return AccessDecision(False, None, reason)

    # -- reads added for the HTTP API -----------------------------------------------------

    def record_parties(self, record_ref: bytes) -> RecordParties | None:
        """The patient and custodian of a record (one indexed query, no proofs); None when the
        log has no such record."""
        with self.store.read() as connection:
            record = connection.execute(
                select(_RECORDS).where(_RECORDS.c.record_ref == record_ref)
            ).first()
        if record is None:
            return None
        return RecordParties(
            record_ref=record_ref, patient=record.patient, custodian=record.custodian
        )

    def took_part(self, record_ref: bytes, institution: str) -> bool:
        """Whether ``institution`` took part in an event about the record: signed one, or is
        named in one (:mod:`ledger.visibility`). One indexed query that stops at the first."""
        with self.store.read() as connection:
            found = connection.execute(
                select(_EVENTS.c.leaf_index)
                .where(
                    _EVENTS.c.record_ref == record_ref,
                    events_visible_to(institution, None),
                )
                .limit(1)
            ).first()
        return found is not None

    def institution(self, address: str) -> InstitutionInfo:
        """An institution's current registration, read from the chain (kind NONE: unknown)."""
        return self.chain.institution(address)

    def consent_nonce(self, patient: str) -> int:
        """The nonce the patient's next signed grant or revocation must carry (on chain)."""
        return self.chain.consent_nonce(patient)

    def anchor_state(self) -> tuple[int, int]:
        """``(anchored, confirmed)``: the tree sizes of the latest checkpoint mined on chain
        and of the latest confirmed one (0 when none)."""
        best, confirmed = self._anchor_checkpoint()
        return (best.tree_size if best is not None else 0), confirmed
