"""Who is calling: API keys, patient sessions (Sign-In with Ethereum) and their nonces.

Three roles:

* **regulator** — an API key: reads everything, registers/suspends/reinstates institutions on
  chain, issues and revokes API keys; never submits events.
* **institution** — an API key bound to the institution's registered signing address: submits
  events signed by that address only; reads its own events and the trails of records it holds
  or took part in.
* **patient** — a short-lived session token obtained with Sign-In with Ethereum (EIP-4361):
  reads their own grants, accesses and trails; relays grants and revocations they signed.

Credentials are bearer tokens ``mtk_<id>.<secret>`` (API keys) and ``mtp_<id>.<secret>``
(patient sessions): a public id to look the credential up, and 256 random bits. Only the
SHA-256 of the whole token is stored (a high-entropy secret needs no slow hash); the token is
shown once, when it is issued.

SIWE nonces are issued without touching the store: a nonce is ``random ‖ expiry ‖ tag`` in
hex, the tag an HMAC under a key kept in the store's meta table (shared by every API process).
Consuming a nonce inserts it into ``siwe_nonces``, whose primary key makes it single-use.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError

from api.problems import Forbidden, Unauthenticated, ValidationFailed
from ledger.service import NotFound
from ledger.settings import ConfigurationError
from ledger.siwe import SiweNonceError
from ledger.store import Store
from ledger.store.models import ApiKeyRow, MetaRow, PatientSessionRow, SiweNonceRow
from ledger.text import check_text

_KEYS = ApiKeyRow.__table__  # type: ignore[attr-defined]
_SESSIONS = PatientSessionRow.__table__  # type: ignore[attr-defined]
_NONCES = SiweNonceRow.__table__  # type: ignore[attr-defined]
_META = MetaRow.__table__  # type: ignore[attr-defined]

Role = Literal["regulator", "institution", "patient"]
KeyRole = Literal["regulator", "institution"]

API_KEY_PREFIX: Final = "mtk_"
SESSION_PREFIX: Final = "mtp_"
_TOKEN_RE: Final = re.compile(r"(mtk|mtp)_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")
_NONCE_KEY_META: Final = "api.siwe-nonce-key"


def _now() -> int:
    return int(time.time())


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def _new_token(prefix: str) -> tuple[str, str]:
    """A fresh ``(id, token)``."""
    token_id = secrets.token_hex(8)
    return token_id, f"{prefix}{token_id}.{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    role: Role
    #: The API key's or the session's public id.
    credential_id: str
    #: The institution's address (institution keys), the patient's (sessions), else None.
    address: str | None
    expires_at: int | None = None

    @property
    def is_regulator(self) -> bool:
        return self.role == "regulator"


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as listed (never with its secret)."""

    key_id: str
    role: KeyRole
    institution: str | None
    label: str
    created_at: int
    revoked_at: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "keyId": self.key_id,
            "role": self.role,
            "institution": self.institution,
            "label": self.label,
            "createdAt": self.created_at,
            "revokedAt": self.revoked_at,
        }


def _key_info(row: Any) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row.key_id,
        role=row.role,
        institution=row.institution,
        label=row.label,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class Credentials:
    """API keys, patient sessions and SIWE nonces, kept in the ledger's store."""

    def __init__(self, store: Store, *, clock: Callable[[], int] = _now) -> None:
        self.store = store
        self.clock = clock
        self._nonce_key: bytes | None = None

    # -- API keys ---------------------------------------------------------------------------

    def issue_key(
        self, role: KeyRole, institution: str | None, label: str
    ) -> tuple[ApiKeyInfo, str]:
        """A new API key; the token is returned once and only its hash is kept."""
        if (role == "institution") != (institution is not None):
            raise ValueError("an institution key needs an institution; a regulator key none")
        key_id, token = _new_token(API_KEY_PREFIX)
        return self._store_key(key_id, token, role, institution, label), token

    def adopt_key(self, token: str, role: KeyRole, label: str) -> ApiKeyInfo:
        """Make an existing token (e.g. one printed by an earlier start) a key of ``role``,
        unless it is known already."""
        match = _TOKEN_RE.fullmatch(token)
        if match is None or match.group(1) != API_KEY_PREFIX[:-1]:
            raise ConfigurationError(
                "the admin key is not a medtrail API key (mtk_<16 hex digits>.<43 base64url>)"
            )
        key_id = match.group(2)
        with self.store.read() as connection:
            row = connection.execute(select(_KEYS).where(_KEYS.c.key_id == key_id)).first()
        if row is not None:
            if not hmac.compare_digest(bytes(row.secret_hash), _hash(token)):
                raise ConfigurationError("another API key with the admin key's id exists")
            return _key_info(row)
        return self._store_key(key_id, token, role, None, label)

    def _store_key(
        self, key_id: str, token: str, role: KeyRole, institution: str | None, label: str
    ) -> ApiKeyInfo:
        label = check_text(label, "label")
        info = ApiKeyInfo(key_id, role, institution, label, self.clock(), None)
        with self.store.write() as connection:
            connection.execute(
                _KEYS.insert().values(
                    key_id=key_id,
                    secret_hash=_hash(token),
                    role=role,
                    institution=institution,
                    label=label,
                    created_at=info.created_at,
                    revoked_at=None,
                )
            )
        return info

    def list_keys(self, after: str | None = None, limit: int | None = None) -> list[ApiKeyInfo]:
        """The API keys, oldest first (by creation time, then id): those after the key
        ``after`` (a key id; :class:`~api.problems.ValidationFailed` if there is no such key),
        at most ``limit`` (None: all)."""
        with self.store.read() as connection:
            query = select(_KEYS).order_by(_KEYS.c.created_at, _KEYS.c.key_id)
            if after is not None:
                created_at = connection.execute(
                    select(_KEYS.c.created_at).where(_KEYS.c.key_id == after)
                ).scalar()
                if created_at is None:
                    raise ValidationFailed(
                        f"`after` names no API key ({after}): pass the `next` of a page",
                        errors=[
                            {"loc": ["query", "after"], "code": "unknown", "detail": "no such key"}
                        ],
                    )
                query = query.where(
                    tuple_(_KEYS.c.created_at, _KEYS.c.key_id) > tuple_(created_at, after)
                )
            if limit is not None:
                query = query.limit(limit)
            return [_key_info(row) for row in connection.execute(query)]

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        """Revoke a key (idempotent); :class:`NotFound` for an unknown id."""
        with self.store.write() as connection:
            row = connection.execute(select(_KEYS).where(_KEYS.c.key_id == key_id)).first()
            if row is None:
                raise NotFound(f"no API key {key_id}")
            if row.revoked_at is None:
                connection.execute(
                    _KEYS.update().where(_KEYS.c.key_id == key_id).values(revoked_at=self.clock())
                )
                row = connection.execute(select(_KEYS).where(_KEYS.c.key_id == key_id)).one()
            return _key_info(row)

    # -- patient sessions -------------------------------------------------------------------

    def open_session(self, address: str, expires_at: int) -> tuple[str, int]:
        """A new patient session token for ``address``; returns ``(token, expires_at)``."""
        session_id, token = _new_token(SESSION_PREFIX)
        now = self.clock()
        with self.store.write() as connection:
            connection.execute(_SESSIONS.delete().where(_SESSIONS.c.expires_at <= now))
            connection.execute(
                _SESSIONS.insert().values(
                    session_id=session_id,
                    secret_hash=_hash(token),
                    address=address,
                    created_at=now,
                    expires_at=expires_at,
                    revoked_at=None,
                )
            )
        return token, expires_at

    def close_session(self, session_id: str) -> None:
        with self.store.write() as connection:
            connection.execute(
                _SESSIONS.update()
                .where(_SESSIONS.c.session_id == session_id, _SESSIONS.c.revoked_at.is_(None))
                .values(revoked_at=self.clock())
            )

    # -- authentication ---------------------------------------------------------------------

    def authenticate(self, token: str) -> Principal:
        """The principal a bearer token stands for; :class:`Unauthenticated` otherwise."""
        match = _TOKEN_RE.fullmatch(token)
        if match is None:
            raise Unauthenticated("the bearer token is not a medtrail API key or session")
        kind, token_id = match.group(1), match.group(2)
        digest = _hash(token)
        now = self.clock()
        with self.store.read() as connection:
            if kind == "mtk":
                row = connection.execute(select(_KEYS).where(_KEYS.c.key_id == token_id)).first()
                if row is None or not hmac.compare_digest(bytes(row.secret_hash), digest):
                    raise Unauthenticated("unknown API key")
                if row.revoked_at is not None:
                    raise Unauthenticated("this API key was revoked")
                return Principal(role=row.role, credential_id=token_id, address=row.institution)
            row = connection.execute(
                select(_SESSIONS).where(_SESSIONS.c.session_id == token_id)
            ).first()
        if row is None or not hmac.compare_digest(bytes(row.secret_hash), digest):
            raise Unauthenticated("unknown session")
        if row.revoked_at is not None:
            raise Unauthenticated("this session was signed out")
        if row.expires_at <= now:
            raise Unauthenticated("this session expired: sign in again")
        return Principal(
            role="patient", credential_id=token_id, address=row.address, expires_at=row.expires_at
        )

    # -- SIWE nonces ------------------------------------------------------------------------

    def _key(self) -> bytes:
        if self._nonce_key is not None:
            return self._nonce_key
        with self.store.read() as connection:
            value = connection.execute(
                select(_META.c.value).where(_META.c.key == _NONCE_KEY_META)
            ).scalar()
        if value is None:
            try:
                with self.store.write() as connection:
                    connection.execute(
                        _META.insert().values(key=_NONCE_KEY_META, value=secrets.token_hex(32))
                    )
            except IntegrityError:
                pass  # another process made it first: use theirs
            with self.store.read() as connection:
                value = connection.execute(
                    select(_META.c.value).where(_META.c.key == _NONCE_KEY_META)
                ).scalar_one()
        self._nonce_key = bytes.fromhex(value)
        return self._nonce_key

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key(), b"medtrail siwe nonce\x00" + body, hashlib.sha256).digest()[
            :16
        ]

    def issue_nonce(self, ttl: int) -> tuple[str, int]:
        """A fresh nonce and its expiry (unix seconds). Nothing is written."""
        expires_at = self.clock() + ttl
        body = secrets.token_bytes(12) + expires_at.to_bytes(8, "big")
        return (body + self._tag(body)).hex(), expires_at

    def consume_nonce(self, nonce: str) -> None:
        """Accept ``nonce`` once: issued here, not expired, never used before."""
        try:
            raw = bytes.fromhex(nonce) if re.fullmatch(r"[0-9a-f]{72}", nonce) else b""
        except ValueError:
            raw = b""
        if len(raw) != 36 or not hmac.compare_digest(raw[20:], self._tag(raw[:20])):
            raise SiweNonceError("the nonce was not issued by this service")
        expires_at = int.from_bytes(raw[12:20], "big")
        now = self.clock()
        if expires_at <= now:
            raise SiweNonceError("the nonce expired: ask for a new one")
        try:
            with self.store.write() as connection:
                connection.execute(_NONCES.delete().where(_NONCES.c.expires_at <= now))
                connection.execute(
                    _NONCES.insert().values(nonce=nonce, used_at=now, expires_at=expires_at)
                )
        except IntegrityError:
            raise SiweNonceError("the nonce was used already: ask for a new one") from None


def require_role(principal: Principal, *roles: Role, action: str) -> None:
    """:class:`Forbidden` unless the principal has one of ``roles``."""
    if principal.role not in roles:
        allowed = " or ".join(roles)
        raise Forbidden(
            f"a {principal.role} may not {action} (only a {allowed})",
            role=principal.role,
        )
