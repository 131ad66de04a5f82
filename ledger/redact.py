"""Keeping secrets out of answers and logs.

Hosted chain nodes put their API key in the RPC URL's path (``https://node.example/v3/<key>``),
its query or its user-info; the database URL may hold a password; the operator's and the
registrar's keys are secrets outright. Error texts from the HTTP and database libraries
repeat URLs, paths and parameters, so whatever medtrail shows — a public ``/readyz``, a problem
answer, a start-up message, a log line — goes through a :class:`Redactor` built from the
settings (:func:`redactor_for`), which replaces each secret fragment it knows:

* a URL by its origin, ``scheme://host:port`` (:func:`url_origin`);
* the URL's user-info, password, path and query, wherever they appear alone, by
  :data:`REDACTED`;
* keys, in any hex spelling, by :data:`REDACTED`.

Pure apart from :class:`RedactingFormatter`, a :mod:`logging` formatter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from ledger.errors import LedgerError

if TYPE_CHECKING:
    from ledger.settings import Settings

__all__ = [
    "REDACTED",
    "RedactingFormatter",
    "Redactor",
    "redact_error",
    "redactor_for",
    "url_origin",
]

#: What a secret fragment becomes.
REDACTED: Final = "[redacted]"
#: Fragments shorter than this are not secrets worth hiding (and would garble any text).
_MIN_SECRET: Final = 4
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def url_origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: no user-info, path, query or fragment. The port is
    the scheme's default when the URL names none; a URL that does not parse is
    :data:`REDACTED` whole."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return REDACTED
    if not parts.scheme or not host:
        return REDACTED
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


def _url_fragments(url: str) -> list[tuple[str, str]]:
    """``(secret, replacement)`` pairs for one URL."""
    pairs = [(url, url_origin(url)), (url.rstrip("/"), url_origin(url))]
    try:
        parts = urlsplit(url)
    except ValueError:
        return pairs
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    candidates = [userinfo, parts.username or "", parts.password or ""]
    if parts.path not in ("", "/"):
        path_query = parts.path + ("?" + parts.query if parts.query else "")
        candidates += [path_query, parts.path]
    if parts.query:
        candidates += [parts.query, *parts.query.split("&")]
    for candidate in candidates:
        for spelling in (candidate, unquote(candidate)):
            if len(spelling) >= _MIN_SECRET:
                pairs.append((spelling, REDACTED))
    return pairs


def _key_fragments(key: str) -> list[tuple[str, str]]:
    text = key.strip()
    digits = text[2:] if text[:2].lower() == "0x" else text
    if len(digits) < _MIN_SECRET:
        return []
    return [(f"0x{digits}", REDACTED), (digits, REDACTED), (digits.lower(), REDACTED)]


@dataclass(frozen=True)
class Redactor:
    """Replaces known secret fragments in text (the longest first)."""

    replacements: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(
        cls,
        *,
        urls: Iterable[str | None] = (),
        keys: Iterable[str | SecretStr | None] = (),
        secrets: Iterable[str | None] = (),
    ) -> Redactor:
        """A redactor for these URLs, hex keys and other secrets (None: nothing to hide)."""
        pairs: list[tuple[str, str]] = []
        for url in urls:
            if url:
                pairs += _url_fragments(url)
        for key in keys:
            value = key.get_secret_value() if isinstance(key, SecretStr) else key
            if value:
                pairs += _key_fragments(value)
        for secret in secrets:
            if secret and len(secret) >= _MIN_SECRET:
                pairs.append((secret, REDACTED))
        unique = dict(sorted(pairs, key=lambda pair: -len(pair[0])))
        return cls(tuple(unique.items()))

    def text(self, value: str) -> str:
        """``value`` with every known secret replaced."""
        for secret, replacement in self.replacements:
            if secret in value:
                value = value.replace(secret, replacement)
        return value

    def value(self, value: Any) -> Any:
        """``value`` with every string in it (keys and items of containers too) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        return value


def redactor_for(settings: Settings) -> Redactor:
    """What the service must never show of its settings: the RPC URL (but its origin), the
    database password, the operator's and the registrar's keys."""
    try:
        password = urlsplit(settings.database_url).password
    except ValueError:
        password = None
    return Redactor.of(
        urls=[settings.rpc_url],
        keys=[settings.operator_key, settings.registrar_key],
        secrets=[password, unquote(password) if password else None],
    )


def redact_error(exc: LedgerError, redactor: Redactor) -> LedgerError:
    """Redact ``exc``'s detail, context and arguments in place (and return it), so that the
    error can be raised on and shown: ``redact_error(exc, redactor); raise``."""
    exc.detail = redactor.text(exc.detail)
    exc.context = redactor.value(exc.context)
    exc.args = tuple(redactor.value(arg) for arg in exc.args)
    return exc


class RedactingFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose output (message, traceback) is redacted."""

    def __init__(self, redactor: Redactor, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.text(super().format(record))
