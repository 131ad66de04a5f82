"""Configuration, from ``MEDTRAIL_*`` environment variables (pydantic-settings).

Two modes:

* ``embedded`` (default): an in-process chain (eth-tester + py-evm) with the contracts
  deployed at start, and a SQLite file. Keys are generated at start: nothing to configure.
* ``rpc``: any EVM node over JSON-RPC (anvil, geth, Besu, an L2), contracts found through the
  deployment file written by ``medtrail deploy``; the operator key is required and has no
  default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.errors import LedgerError


class ConfigurationError(LedgerError):
    code = "configuration-error"


#: SQLite: the page cache of a write transaction (MiB), and the WAL pages between checkpoints
#: (``ledger.store.db``, where they are explained).
SQLITE_WRITE_CACHE_MIB = 64
SQLITE_WAL_AUTOCHECKPOINT = 16_384


class Settings(BaseSettings):
    """Everything medtrail reads from the environment (prefix ``MEDTRAIL_``)."""

    model_config = SettingsConfigDict(env_prefix="MEDTRAIL_", extra="ignore")

    mode: Literal["embedded", "rpc"] = "embedded"
    #: SQLAlchemy URL of the store: ``sqlite:///path`` or ``postgresql+psycopg://…``
    #: (``postgres://…`` and ``postgresql://…``, the usual spellings, mean the latter).
    database_url: str = "sqlite:///.medtrail/embedded.db"
    #: JSON-RPC endpoint of the chain (``rpc`` mode).
    rpc_url: str | None = None
    rpc_timeout: float = Field(default=10.0, gt=0)
    #: Deployment file written by ``medtrail deploy`` (``rpc`` mode).
    deployment_file: Path = Path(".medtrail/deployment.json")
    #: The log operator's key: signs receipts, commits checkpoints, pays for relayed consent.
    operator_key: SecretStr | None = None
    #: A regulator's REGISTRAR key, if the admin API should register institutions on chain.
    registrar_key: SecretStr | None = None

    #: Commit a checkpoint at least this often (seconds) while new events wait...
    anchor_interval: float = Field(default=10.0, gt=0)
    #: ...or as soon as this many events wait.
    anchor_batch: int = Field(default=10_000, ge=1)
    #: Blocks (the checkpoint's own included) before a checkpoint counts as confirmed.
    confirmations: int | None = Field(default=None, ge=1)
    #: Seconds without a receipt before a checkpoint transaction is re-sent with higher fees.
    tx_timeout: float = Field(default=60.0, gt=0)
    #: The receipt's promise: every event is anchored within this many seconds.
    max_merge_delay: int = Field(default=3600, ge=1)
    #: How far ahead of the service's clock an event's ``occurredAt`` may be.
    max_future_skew: int = Field(default=300, ge=0)
    #: How far before the service's clock an event's ``occurredAt`` may be: events are logged
    #: when they happen (a day leaves room for an offline clinic to sync), not dated at will.
    max_backdate: int = Field(default=86_400, ge=0)
    #: Most events accepted in one ``POST /v1/events``.
    max_batch: int = Field(default=1000, ge=1, le=100_000)
    #: SQLite: the page cache of a write transaction, in MiB (one writer at a time per
    #: process; readers keep SQLite's default of about 2 MiB): a batch's index pages stay in
    #: memory until its commit.
    sqlite_write_cache_mib: int = Field(default=SQLITE_WRITE_CACHE_MIB, ge=1, le=4096)
    #: SQLite: WAL pages (4 KiB) written before they are checkpointed into the database.
    sqlite_wal_autocheckpoint: int = Field(default=SQLITE_WAL_AUTOCHECKPOINT, ge=1)
    #: Seconds an institution's on-chain registration is cached by ingest.
    institution_cache_ttl: float = Field(default=5.0, ge=0)

    #: Embedded mode: after the service's own transactions, wait for the wall clock to reach
    #: the in-process chain's block time (py-evm runs ahead by a second per block).
    embedded_clock_sync: bool = True
    #: Embedded mode: deploy ConsentRegistryV2 too, which then takes every new grant
    #: (docs/upgrading.md); false: a version-1-only deployment, as before it. (A JSON-RPC
    #: deployment has consent version 2 when its deployment file names ``consentRegistryV2``.)
    embedded_consent_v2: bool = True

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: The EIP-4361 (Sign-In with Ethereum) domain patients sign in to: the authority of the
    #: API as the wallet sees it (``host[:port]``). Default: ``{host}:{port}``.
    siwe_domain: str = ""

    #: Sign-in nonces issued, and failed sign-ins or authentications, allowed per client
    #: address and minute (a token bucket per API process, see ``api/ratelimit.py``)...
    auth_rate: float = Field(default=60.0, gt=0)
    #: ...and at once.
    auth_burst: int = Field(default=60, ge=1)

    #: ``medtrail serve``: seconds a client has to send a whole request head (request line and
    #: headers) from its first byte, or from connecting; then the connection is closed.
    header_timeout: float = Field(default=10.0, gt=0)
    #: Seconds an idle keep-alive connection is kept open between requests.
    keep_alive_timeout: int = Field(default=5, ge=1)
    #: Connections one API process holds at most; beyond, it answers 503 and closes.
    max_connections: int = Field(default=1000, ge=1)
    #: API processes (``--workers``); more than one only in ``rpc`` mode.
    workers: int = Field(default=1, ge=1, le=64)

    #: ``medtrail serve``'s log lines: ``text`` for people, ``json`` (one object a line, with
    #: the request id) for a log collector.
    log_format: Literal["text", "json"] = "text"
    #: One access-log line per request (logger ``medtrail.access``).
    access_log: bool = True
    #: ``/readyz``: seconds all its checks (store, chain, anchoring role) may take together;
    #: a check still running then is reported as timed out (a load balancer's probe must
    #: have its answer well within its own timeout).
    readiness_timeout: float = Field(default=2.5, gt=0, le=60)
    #: Embedded mode: serve the in-process chain read-only over JSON-RPC on
    #: ``127.0.0.1:<port>`` (for trying the regulator's tools; 0 picks a free port, -1 off).
    trial_rpc_port: int = Field(default=8546, ge=-1, le=65535)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        return database_url(value)

    @model_validator(mode="after")
    def _check_mode(self) -> Settings:
        if self.mode == "rpc":
            if not self.rpc_url:
                raise ValueError("MEDTRAIL_RPC_URL is required in rpc mode")
            if self.operator_key is None:
                raise ValueError(
                    "MEDTRAIL_OPERATOR_KEY is required in rpc mode (it has no default "
                    "outside the embedded mode)"
                )
        if not self.siwe_domain:
            self.siwe_domain = f"{self.host}:{self.port}"
        return self

    @model_validator(mode="after")
    def _check_workers(self) -> Settings:
        if self.workers > 1 and self.mode == "embedded":
            raise ValueError(
                "MEDTRAIL_WORKERS (--workers) above 1 needs rpc mode: in embedded mode the chain "
                "lives inside the service's process, and each worker would run a chain of its own"
            )
        return self

    @property
    def required_confirmations(self) -> int:
        """Confirmations to wait for: as configured, else 1 embedded and 3 over RPC."""
        if self.confirmations is not None:
            return self.confirmations
        return 1 if self.mode == "embedded" else 3


#: The spellings of a PostgreSQL URL people use, and the driver medtrail ships (psycopg 3).
_POSTGRES_SCHEMES = ("postgres://", "postgresql://", "postgresql+psycopg://")


def database_url(value: str) -> str:
    """``MEDTRAIL_DATABASE_URL`` as SQLAlchemy takes it: ``sqlite:///path`` as it is; a
    PostgreSQL URL in any usual spelling (``postgres://``, ``postgresql://``) with medtrail's
    driver, ``postgresql+psycopg://``. Anything else (a plain path, another database or
    driver) is a :class:`ValueError` that says what to write instead; the message never
    repeats the URL, which may hold a password."""
    text = value.strip()
    lowered = text.lower()
    if lowered.startswith("sqlite:///"):
        return text
    for scheme in _POSTGRES_SCHEMES:
        if lowered.startswith(scheme):
            return "postgresql+psycopg://" + text[len(scheme) :]
    scheme, sep, _rest = text.partition("://")
    if not sep:
        raise ValueError(
            "MEDTRAIL_DATABASE_URL must be a URL: sqlite:///path/to/file.db (a file) or "
            "postgresql://user@host/database, not a plain path"
        )
    raise ValueError(
        f"MEDTRAIL_DATABASE_URL names a {scheme[:40]!r} database: medtrail stores its log in "
        "SQLite (sqlite:///path/to/file.db) or PostgreSQL (postgresql://user@host/database)"
    )


def parse_key(secret: SecretStr, name: str) -> bytes:
    """A 32-byte secp256k1 private key from 0x-hex, with a clear error."""
    text = secret.get_secret_value().strip()
    text = text[2:] if text.startswith(("0x", "0X")) else text
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32 or not any(key):
        raise ConfigurationError(f"{name} must be a 32-byte private key in hex")
    return key
