"""Table models. They are the store's business: the API never returns one as it is.

Binary values (digests, signatures, record references) are stored as raw bytes; addresses as
EIP-55 strings. Tree nodes are keyed by one integer (see :func:`node_key`) so that fetching the
O(log n) nodes of a proof is a single indexed ``IN`` query.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    text,
)
from sqlmodel import Field, SQLModel

NODE_LEVEL_SHIFT = 56


def node_key(level: int, index: int) -> int:
    """One integer for the perfect-subtree node ``(level, index)``; 2**56 leaves at most."""
    return (level << NODE_LEVEL_SHIFT) | index


class EventRow(SQLModel, table=True):
    """One signed event at its place in the log."""

    __tablename__ = "events"
    #: A record's trail and a patient's events, read by page in log order (``key = ? AND
    #: leaf_index > ? ORDER BY leaf_index LIMIT n``): one range of one index per page. The
    #: events that refer to another (``ref_event_id IN (…)``: ingest, a page's refs) only
    #: those that do: a record access, most of the log, adds nothing to that index. No other
    #: index: each is work for every event ingested (migration 0008).
    __table_args__ = (
        Index("ix_events_record_ref_leaf_index", "record_ref", "leaf_index"),
        Index("ix_events_patient_leaf_index", "patient", "leaf_index"),
        Index(
            "ix_events_ref_event_id",
            "ref_event_id",
            sqlite_where=text("ref_event_id IS NOT NULL"),
            postgresql_where=text("ref_event_id IS NOT NULL"),
        ),
    )

    leaf_index: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    event_id: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False, unique=True))
    event_type: str = Field(sa_column=Column(String(32), nullable=False))
    #: Not indexed: every filter on it is "signed or named in" (an ``OR`` with counterparty),
    #: which no index of one column serves.
    institution: str = Field(sa_column=Column(String(42), nullable=False))
    patient: str = Field(sa_column=Column(String(42), nullable=False))
    #: The record this event belongs to (own recordRef, or inherited through its references).
    record_ref: bytes | None = Field(default=None, sa_column=Column(LargeBinary(32)))
    #: The other institution the event names (ledger.visibility.counterparty).
    counterparty: str | None = Field(default=None, sa_column=Column(String(42)))
    #: The event this one refers to: prescriptionId, serviceRef or claimId.
    ref_event_id: bytes | None = Field(default=None, sa_column=Column(LargeBinary(32)))
    #: Makes "one payment per claim" and "one dispense per fill" hold under concurrency.
    claim_key: str | None = Field(default=None, sa_column=Column(String(100), unique=True))
    digest: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary(65), nullable=False))
    #: The event's fields as canonical JSON (what was signed).
    body: str = Field(sa_column=Column(Text, nullable=False))
    occurred_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    received_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    #: The receipt's promise: anchored on chain by this time (received_at + max merge delay).
    anchor_by: int = Field(sa_column=Column(BigInteger, nullable=False))
    consent_status: str = Field(sa_column=Column(String(32), nullable=False))
    #: The operator's signature: over this receipt alone (batch columns null), or over the
    #: ``ReceiptBatch`` of the receipts of leaves ``receipt_batch_first`` ..
    #: ``+ receipt_batch_count - 1`` (root ``receipt_batch_root``), this one's path to that
    #: root in ``receipt_path``.
    receipt_signature: bytes = Field(sa_column=Column(LargeBinary(65), nullable=False))
    receipt_batch_first: int | None = Field(default=None, sa_column=Column(BigInteger))
    receipt_batch_count: int | None = Field(default=None, sa_column=Column(Integer))
    receipt_batch_root: bytes | None = Field(default=None, sa_column=Column(LargeBinary(32)))
    receipt_path: bytes | None = Field(default=None, sa_column=Column(LargeBinary))


class RecordRow(SQLModel, table=True):
    """A health record the log has seen: whose it is and which institution holds it."""

    __tablename__ = "records"

    record_ref: bytes = Field(sa_column=Column(LargeBinary(32), primary_key=True))
    patient: str = Field(sa_column=Column(String(42), nullable=False, index=True))
    #: Fixed by the record's first event: an access's custodian, or the prescribing hospital.
    custodian: str | None = Field(default=None, sa_column=Column(String(42)))
    first_leaf: int = Field(sa_column=Column(BigInteger, nullable=False))


class IngestCounter(SQLModel, table=True):
    """The next leaf index to hand out. Its row lock serialises ingest transactions."""

    __tablename__ = "ingest_counter"

    id: int = Field(default=1, primary_key=True)
    next_index: int = Field(sa_column=Column(BigInteger, nullable=False))


class TreeHead(SQLModel, table=True):
    """How much of the event log the Merkle tree has integrated, and its root."""

    __tablename__ = "tree_head"

    id: int = Field(default=1, primary_key=True)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    root: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class TreeNode(SQLModel, table=True):
    """A perfect-subtree node of the Merkle tree (level 0: leaf hashes)."""

    __tablename__ = "tree_nodes"

    key: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


class CheckpointRow(SQLModel, table=True):
    """A checkpoint of the tree and the life of its anchoring transaction.

    status: ``pending`` (to send) → ``sent`` (signed tx recorded, then broadcast) →
    ``anchored`` (mined) → ``confirmed`` (enough confirmations). A reorg sends it back to
    ``pending``; ``superseded`` marks a pending checkpoint replaced by a larger one before it
    was ever mined.
    """

    __tablename__ = "checkpoints"

    tree_size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    #: The root of the verifiable index at ``tree_size``, committed with the log's root (None:
    #: a row written before the index existed).
    index_root: bytes | None = Field(default=None, sa_column=Column(LargeBinary(32)))
    status: str = Field(sa_column=Column(String(16), nullable=False, index=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    previous_size: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    tx_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary(32)))
    tx_nonce: int | None = Field(default=None, sa_column=Column(BigInteger))
    sent_at: int | None = Field(default=None, sa_column=Column(BigInteger))
    block_number: int | None = Field(default=None, sa_column=Column(BigInteger))
    block_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary(32)))
    anchored_at: int | None = Field(default=None, sa_column=Column(BigInteger))
    confirmed_at: int | None = Field(default=None, sa_column=Column(BigInteger))


class CheckpointTx(SQLModel, table=True):
    """Every signed transaction made for a checkpoint (the first and its fee-bumped replacements),
    written before it is broadcast, so a restart knows what may be in flight."""

    __tablename__ = "checkpoint_txs"

    tx_hash: bytes = Field(sa_column=Column(LargeBinary(32), primary_key=True))
    tree_size: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    nonce: int = Field(sa_column=Column(BigInteger, nullable=False))
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    fee_bump: int = Field(default=0, nullable=False)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


# --------------------------------------------------------------------------- the index
# The verifiable index (docs/index.md, ledger/index_store.py): a version per checkpoint size,
# the trie's tiles by tile and version.


class IndexVersionRow(SQLModel, table=True):
    """The index at one log size (each checkpoint's): its root, and the deepest leaf of its
    trie (what a lookup plan needs). The largest size is the index's head."""

    __tablename__ = "index_versions"

    size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    depth: int = Field(sa_column=Column(Integer, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class IndexTileRow(SQLModel, table=True):
    """A tile of the trie (``ledger.index_store``: the nodes of up to 8 levels below its root)
    as the update to log size ``version`` left it: ``whole``, every node of the tile, else a
    delta, the nodes that update wrote in it. The tile at a size is its last whole row at or
    below it with the deltas since applied in version order. ``tile`` is the tile root's heap
    number (root 1, children 2n and 2n + 1) as big-endian bytes: a path can be 256 deep.

    Clustered on ``(version, tile)`` in SQLite (``WITHOUT ROWID``): the rows of an update are
    appended together, not spread over the pages of every tile they touch (the pages a commit
    writes were the anchor worker's cost); ``(tile, version)`` finds a tile's rows."""

    __tablename__ = "index_tiles"
    __table_args__ = (
        Index("ix_index_tiles_tile_version", "tile", "version"),
        {"sqlite_with_rowid": False},
    )

    version: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    tile: bytes = Field(sa_column=Column(LargeBinary(33), primary_key=True))
    whole: bool = Field(sa_column=Column(Boolean, nullable=False))
    nodes: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class GrantRow(SQLModel, table=True):
    """A consent grant as last read from the chain (the chain is the authority)."""

    __tablename__ = "grants"

    grant_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    patient: str = Field(sa_column=Column(String(42), nullable=False, index=True))
    grantee: str = Field(sa_column=Column(String(42), nullable=False, index=True))
    record_ref: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    purposes: int = Field(sa_column=Column(Numeric(78, 0), nullable=False))
    not_before: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    revoked_at: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    tx_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary(32)))


class ConsentGrantRow(SQLModel, table=True):
    """A version-2 grant the patient signed (:class:`ledger.consent.SignedGrant`), kept off
    chain and shown only to those who may see it; only its commitment goes on chain.

    ``state``: ``pending`` until the committer sees its commitment on chain, then
    ``committed`` (``committed_at``: the block time, as the chain says); ``lapsed`` when its
    deadline passed before that (it can never be committed in time). Revocations are not kept
    here: they are read from the chain, wherever they were sent from."""

    __tablename__ = "consent_grants"

    commitment: bytes = Field(sa_column=Column(LargeBinary(32), primary_key=True))
    patient: str = Field(sa_column=Column(String(42), nullable=False, index=True))
    grantee: str = Field(sa_column=Column(String(42), nullable=False, index=True))
    #: The signed grant, as :meth:`ledger.consent.SignedGrant.as_json` writes it.
    body: str = Field(sa_column=Column(Text, nullable=False))
    received_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False, index=True))
    committed_at: int | None = Field(default=None, sa_column=Column(BigInteger))


class MetaRow(SQLModel, table=True):
    """Key/value facts about this store (e.g. the deployment it belongs to)."""

    __tablename__ = "meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_column=Column(Text, nullable=False))


# --------------------------------------------------------------------------- API auth
# Credentials of the HTTP API (api/auth.py). Secrets are never stored: only the SHA-256 of
# the whole high-entropy token, looked up by its public id.


class ApiKeyRow(SQLModel, table=True):
    """An API key: a regulator's, or an institution's bound to its registered address."""

    __tablename__ = "api_keys"

    key_id: str = Field(sa_column=Column(String(32), primary_key=True))
    secret_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    #: ``regulator`` or ``institution``.
    role: str = Field(sa_column=Column(String(16), nullable=False))
    #: The institution's signing address (EIP-55); None for regulators.
    institution: str | None = Field(default=None, sa_column=Column(String(42), index=True))
    label: str = Field(sa_column=Column(String(200), nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    revoked_at: int | None = Field(default=None, sa_column=Column(BigInteger))


class PatientSessionRow(SQLModel, table=True):
    """A patient's short-lived bearer token, issued after Sign-In with Ethereum."""

    __tablename__ = "patient_sessions"

    session_id: str = Field(sa_column=Column(String(32), primary_key=True))
    secret_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    address: str = Field(sa_column=Column(String(42), nullable=False, index=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    revoked_at: int | None = Field(default=None, sa_column=Column(BigInteger))


class SiweNonceRow(SQLModel, table=True):
    """A Sign-In with Ethereum nonce that has been used (nonces are single-use); kept until it
    would have expired anyway."""

    __tablename__ = "siwe_nonces"

    nonce: str = Field(sa_column=Column(String(96), primary_key=True))
    used_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
