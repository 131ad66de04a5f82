"""Sign-In with Ethereum (EIP-4361 / ERC-4361): strict parsing, rendering and verification.

Pure: no I/O, no clock (``now`` is passed in), no nonce store (the caller checks that the
nonce was issued by it and is used once, raising :class:`SiweNonceError` otherwise).

Why not the ``siwe`` package: it pins ``web3 < 8`` and fails to import with the current
``abnf``. EIP-4361 messages are small and line-oriented, so this module implements the
EIP's ABNF directly (the RFC 3986 and RFC 3339 productions it references are translated
to regular expressions below, rule by rule).

Strictness, each a deliberate choice:

* The whole ABNF, line by line: the exact header ``<domain> wants you to sign in with
  your Ethereum account:`` with an optional ``scheme://`` prefix, the blank lines, the
  mandatory fields in order, the optional ones in order, no trailing newline, only ASCII
  (every ABNF production is ASCII), at most :data:`MAX_MESSAGE_LENGTH` characters.
* ``address`` must carry its EIP-55 checksum (all-lowercase is refused: the EIP says the
  address MUST conform to EIP-55 for EOAs, and the relying party compares it to the
  recovered signer).
* ``domain`` must be an RFC 3986 authority with a non-empty host.
* ``chain-id``: ``1*DIGIT`` without leading zeros, 1 .. 2**256-1 (a deviation: the ABNF
  admits ``01``, which would make the chain binding ambiguous).
* Timestamps: RFC 3339 ``date-time`` (``T``/``Z`` also in lower case, as RFC 3339 §5.6
  allows). Refused: leap seconds (``:60``, not representable by ``datetime``), years
  outside 0001..9999, and instants whose UTC conversion overflows. Fractions beyond
  microseconds are truncated in the ``datetime`` (the original spelling is kept, so
  :meth:`SiweMessage.to_text` still reproduces the text exactly).
* Signatures: 65 bytes ``r ‖ s ‖ v`` (EIP-191 ``personal_sign``), ``v`` in {27, 28} or
  {0, 1} (some hardware wallets emit the latter), ``0 < r, s < n`` and ``s <= n/2``
  (eth-account accepts malleable high-s signatures; we do not).

Out of scope: ERC-1271 contract wallets. The EIP says contract accounts SHOULD be
verified with ERC-1271 ``isValidSignature`` on the message's chain; that needs a chain
call, so it does not belong in this pure module. A contract wallet's sign-in fails here
with :class:`SiweSignatureError`; the API may add an on-chain ERC-1271 check on top.

Sources: EIP-4361 (ethereum/EIPs ``EIPS/eip-4361.md``, ethereum/ERCs ``ERCS/erc-4361.md``
for the ``scheme`` prefix); RFC 3986 Appendix A; RFC 3339 §5.6.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from ledger.eip712 import check_signature, keccak, to_checksum_address
from ledger.errors import LedgerError, SignatureError

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "HEADER_SUFFIX",
    "MAX_MESSAGE_LENGTH",
    "SiweChainIdError",
    "SiweDomainError",
    "SiweError",
    "SiweExpiredError",
    "SiweMalformedError",
    "SiweMessage",
    "SiweNonceError",
    "SiweNotYetValidError",
    "SiweSignatureError",
    "SiweUriError",
    "format_timestamp",
    "new_nonce",
    "parse_timestamp",
    "verify_siwe",
]

# --------------------------------------------------------------------------- errors


class SiweError(LedgerError):
    code = "siwe-invalid"


class SiweMalformedError(SiweError):
    code = "siwe-malformed"


class SiweDomainError(SiweError):
    code = "siwe-domain"


class SiweUriError(SiweError):
    code = "siwe-uri"


class SiweChainIdError(SiweError):
    code = "siwe-chain-id"


class SiweExpiredError(SiweError):
    code = "siwe-expired"


class SiweNotYetValidError(SiweError):
    code = "siwe-not-yet-valid"


class SiweSignatureError(SiweError):
    code = "siwe-signature"


class SiweNonceError(SiweError):
    code = "siwe-nonce"


# --------------------------------------------------------------------------- grammar

#: The fixed text after the (optional ``scheme://`` and) domain on the first line.
HEADER_SUFFIX: Final = " wants you to sign in with your Ethereum account:"
#: Longest message accepted (characters). Real messages are a few hundred.
MAX_MESSAGE_LENGTH: Final = 16_384
#: How far in the future ``Issued At`` may be (clocks differ a little).
DEFAULT_CLOCK_SKEW: Final = timedelta(seconds=60)

# RFC 3986 Appendix A, rule by rule.
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"
_USERINFO = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*"
_DEC_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])"
_IPV4 = rf"{_DEC_OCTET}\.{_DEC_OCTET}\.{_DEC_OCTET}\.{_DEC_OCTET}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"
_IPV6 = (
    "(?:"
    + "|".join(
        [
            rf"(?:{_H16}:){{6}}{_LS32}",
            rf"::(?:{_H16}:){{5}}{_LS32}",
            rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
            rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
            rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
            rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
        ]
    )
    + ")"
)
_IPVFUTURE = rf"v[0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+"
_IP_LITERAL = rf"\[(?:{_IPV6}|{_IPVFUTURE})\]"
_REG_NAME = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*"
_NONEMPTY_REG_NAME = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})+"
_PORT = r"[0-9]*"
_SEGMENT = rf"{_PCHAR}*"
_SEGMENT_NZ = rf"{_PCHAR}+"
_PATH_ABEMPTY = rf"(?:/{_SEGMENT})*"
_PATH_ABSOLUTE = rf"/(?:{_SEGMENT_NZ}(?:/{_SEGMENT})*)?"
_PATH_ROOTLESS = rf"{_SEGMENT_NZ}(?:/{_SEGMENT})*"
_QUERY = rf"(?:{_PCHAR}|[/?])*"


def _authority(host_name: str) -> str:
    host = rf"(?:{_IP_LITERAL}|{_IPV4}|{host_name})"
    return rf"(?:{_USERINFO}@)?{host}(?::{_PORT})?"


_HIER_PART = rf"(?://{_authority(_REG_NAME)}{_PATH_ABEMPTY}|{_PATH_ABSOLUTE}|{_PATH_ROOTLESS}|)"
_URI = rf"{_SCHEME}:{_HIER_PART}(?:\?{_QUERY})?(?:#{_QUERY})?"

_URI_RE: Final = re.compile(_URI, re.ASCII)
_SCHEME_RE: Final = re.compile(_SCHEME, re.ASCII)
#: EIP-4361 ``domain``: an RFC 3986 authority whose host is not empty.
_DOMAIN_RE: Final = re.compile(_authority(_NONEMPTY_REG_NAME), re.ASCII)
_ADDRESS_RE: Final = re.compile(r"0x[0-9A-Fa-f]{40}", re.ASCII)
_STATEMENT_RE: Final = re.compile(rf"[{_UNRESERVED}:/?#\[\]@{_SUB_DELIMS} ]*", re.ASCII)
_NONCE_RE: Final = re.compile(r"[A-Za-z0-9]{8,}", re.ASCII)
_CHAIN_ID_RE: Final = re.compile(r"[1-9][0-9]{0,77}", re.ASCII)
_REQUEST_ID_RE: Final = re.compile(rf"{_PCHAR}*", re.ASCII)
# RFC 3339 §5.6 date-time (T and Z case-insensitive per its note).
_DATE_TIME_RE: Final = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<frac>[0-9]+))?"
    r"(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<oh>[0-9]{2}):(?P<om>[0-9]{2}))",
    re.ASCII,
)

_URI_PREFIX: Final = "URI: "
_VERSION_PREFIX: Final = "Version: "
_CHAIN_ID_PREFIX: Final = "Chain ID: "
_NONCE_PREFIX: Final = "Nonce: "
_ISSUED_AT_PREFIX: Final = "Issued At: "
_EXPIRATION_PREFIX: Final = "Expiration Time: "
_NOT_BEFORE_PREFIX: Final = "Not Before: "
_REQUEST_ID_PREFIX: Final = "Request ID: "
_RESOURCES_LINE: Final = "Resources:"
_RESOURCE_PREFIX: Final = "- "

_NONCE_ALPHABET: Final = string.ascii_letters + string.digits


def new_nonce(length: int = 22) -> str:
    """A fresh random nonce: ``length`` (>= 8) ASCII letters and digits (22 ≈ 131 bits)."""
    if length < 8:
        raise ValueError("an EIP-4361 nonce has at least 8 characters")
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


# --------------------------------------------------------------------------- timestamps


def parse_timestamp(text: str, field_name: str = "timestamp") -> datetime:
    """An RFC 3339 ``date-time`` as an aware ``datetime``; :class:`SiweMalformedError` if not."""
    m = _DATE_TIME_RE.fullmatch(text)
    if m is None:
        raise SiweMalformedError(
            f"{field_name}: {text!r} is not an RFC 3339 date-time", field=field_name
        )
    if m["z"] is not None:
        tz = UTC
    else:
        hours, minutes = int(m["oh"]), int(m["om"])
        if hours > 23 or minutes > 59:
            raise SiweMalformedError(
                f"{field_name}: invalid UTC offset in {text!r}", field=field_name
            )
        offset = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-offset if m["sign"] == "-" else offset)
    if m["second"] == "60":
        raise SiweMalformedError(
            f"{field_name}: leap seconds are not supported ({text!r})", field=field_name
        )
    frac = m["frac"] or ""
    try:
        value = datetime(
            int(m["year"]),
            int(m["month"]),
            int(m["day"]),
            int(m["hour"]),
            int(m["minute"]),
            int(m["second"]),
            int(frac[:6].ljust(6, "0")),
            tzinfo=tz,
        )
        value.astimezone(UTC)  # the instant must be representable
    except (ValueError, OverflowError) as exc:
        raise SiweMalformedError(
            f"{field_name}: {text!r} is not a valid date-time ({exc})", field=field_name
        ) from None
    return value


def format_timestamp(value: datetime) -> str:
    """The canonical RFC 3339 form: ``Z`` for UTC, shortest fraction, else ``±hh:mm``."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("timestamps must be timezone-aware")
    if offset % timedelta(minutes=1):  # RFC 3339 offsets have no seconds: render in UTC
        value, offset = value.astimezone(UTC), timedelta(0)
    text = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    if not offset:
        return text + "Z"
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


# --------------------------------------------------------------------------- message


@dataclass(frozen=True)
class _Spelling:
    """Lexical details of a parsed text that the field values cannot carry."""

    issued_at: str | None
    expiration_time: str | None
    not_before: str | None
    empty_resources_header: bool


@dataclass(frozen=True, kw_only=True)
class SiweMessage:
    """An EIP-4361 message. Every field is validated on construction.

    Equality compares values (timestamps as instants). :meth:`to_text` renders the
    message; for a message that came from :meth:`parse` it reproduces the parsed text
    exactly (a timestamp's original spelling, e.g. ``.000Z`` or ``+02:00``, and an empty
    ``Resources:`` list are remembered; ``dataclasses.replace`` forgets them).
    """

    domain: str
    address: str
    statement: str | None = None
    uri: str
    version: str = "1"
    chain_id: int
    nonce: str
    issued_at: datetime
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = ()
    #: The optional ``scheme://`` before the domain (ERC-4361); ``None``: https assumed.
    scheme: str | None = None
    _spelling: _Spelling | None = field(default=None, init=False, repr=False, compare=False)

    @staticmethod
    def new_nonce(length: int = 22) -> str:
        """A fresh random nonce (see the module-level :func:`new_nonce`)."""
        return new_nonce(length)

    def __post_init__(self) -> None:
        def bad(field_name: str, detail: str) -> SiweMalformedError:
            return SiweMalformedError(f"{field_name}: {detail}", field=field_name)

        if self.scheme is not None and not _is_str_match(_SCHEME_RE, self.scheme):
            raise bad("scheme", f"{self.scheme!r} is not an RFC 3986 scheme")
        if not _is_str_match(_DOMAIN_RE, self.domain):
            raise bad("domain", f"{self.domain!r} is not an RFC 3986 authority")
        if not _is_str_match(_ADDRESS_RE, self.address):
            raise bad("address", f"{self.address!r} is not 0x followed by 40 hex digits")
        checksummed = to_checksum_address(self.address.lower())
        if self.address != checksummed:
            raise bad("address", f"{self.address} is not EIP-55 checksummed ({checksummed})")
        if self.statement is not None and not _is_str_match(_STATEMENT_RE, self.statement):
            raise bad(
                "statement",
                "only RFC 3986 reserved and unreserved characters and spaces are allowed",
            )
        if not _is_str_match(_URI_RE, self.uri):
            raise bad("uri", f"{self.uri!r} is not an RFC 3986 URI")
        if self.version != "1":
            raise bad("version", f"must be '1', got {self.version!r}")
        if type(self.chain_id) is not int or not 0 < self.chain_id < 1 << 256:
            raise bad("chain_id", f"must be an int in 1..2**256-1, got {self.chain_id!r}")
        if not _is_str_match(_NONCE_RE, self.nonce):
            raise bad("nonce", "must be at least 8 ASCII letters or digits")
        for name in ("issued_at", "expiration_time", "not_before"):
            value = getattr(self, name)
            if value is None and name != "issued_at":
                continue
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise bad(name, "must be a timezone-aware datetime")
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise bad(name, "out of range") from None
        if self.request_id is not None and not _is_str_match(_REQUEST_ID_RE, self.request_id):
            raise bad("request_id", "only RFC 3986 pchar characters are allowed")
        if not isinstance(self.resources, tuple):
            raise bad("resources", "must be a tuple of URIs")
        for resource in self.resources:
            if not _is_str_match(_URI_RE, resource):
                raise bad("resources", f"{resource!r} is not an RFC 3986 URI")

    # -- text -------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> SiweMessage:
        """Parse ``text`` strictly by the EIP-4361 ABNF, or raise :class:`SiweMalformedError`."""
        if not isinstance(text, str):
            raise SiweMalformedError("a SIWE message must be a str")
        if len(text) > MAX_MESSAGE_LENGTH:
            raise SiweMalformedError(
                f"message longer than {MAX_MESSAGE_LENGTH} characters", length=len(text)
            )
        if not text.isascii():
            raise SiweMalformedError("a SIWE message is ASCII only")
        lines = text.split("\n")
        reader = _Lines(lines)

        header = reader.next("header")
        if not header.endswith(HEADER_SUFFIX):
            raise SiweMalformedError(f"the first line must be '<domain>{HEADER_SUFFIX}'", line=1)
        origin = header[: -len(HEADER_SUFFIX)]
        scheme: str | None = None
        domain = origin
        if "://" in origin:
            scheme, _, domain = origin.partition("://")
            if not _is_str_match(_SCHEME_RE, scheme):
                raise SiweMalformedError(f"scheme: {scheme!r} is not an RFC 3986 scheme", line=1)
        if not domain:
            raise SiweMalformedError("domain: missing", line=1)

        address = reader.next("address")
        reader.expect_blank()
        statement: str | None = None
        candidate = reader.next("statement or blank line")
        if candidate:  # "[ statement LF ] LF"
            statement = candidate
            reader.expect_blank()
        elif reader.peek() == "":  # an empty statement: "LF LF LF"
            statement = ""
            reader.next("blank line")

        uri = reader.field(_URI_PREFIX)
        version = reader.field(_VERSION_PREFIX)
        chain_id_text = reader.field(_CHAIN_ID_PREFIX)
        nonce = reader.field(_NONCE_PREFIX)
        issued_at_text = reader.field(_ISSUED_AT_PREFIX)
        expiration_text = reader.optional_field(_EXPIRATION_PREFIX)
        not_before_text = reader.optional_field(_NOT_BEFORE_PREFIX)
        request_id = reader.optional_field(_REQUEST_ID_PREFIX)
        resources: list[str] = []
        resources_header = False
        if reader.peek() == _RESOURCES_LINE:
            reader.next(_RESOURCES_LINE)
            resources_header = True
            while not reader.done():
                line = reader.next("resource")
                if not line.startswith(_RESOURCE_PREFIX):
                    raise SiweMalformedError(
                        f"resources: each line must start with '- ' ({line!r})",
                        line=reader.index,
                    )
                resources.append(line[len(_RESOURCE_PREFIX) :])
        if not reader.done():
            raise SiweMalformedError(
                f"unexpected line {reader.peek()!r} (wrong order, unknown field or trailing"
                " newline)",
                line=reader.index + 1,
            )

        if not _CHAIN_ID_RE.fullmatch(chain_id_text):
            raise SiweMalformedError(
                f"chain_id: {chain_id_text!r} is not a decimal chain id without leading zeros",
                field="chain_id",
            )
        message = cls(
            domain=domain,
            address=address,
            statement=statement,
            uri=uri,
            version=version,
            chain_id=int(chain_id_text),
            nonce=nonce,
            issued_at=parse_timestamp(issued_at_text, "issued_at"),
            expiration_time=(
                None
                if expiration_text is None
                else parse_timestamp(expiration_text, "expiration_time")
            ),
            not_before=(
                None if not_before_text is None else parse_timestamp(not_before_text, "not_before")
            ),
            request_id=request_id,
            resources=tuple(resources),
            scheme=scheme,
        )
        spelling = _Spelling(
            issued_at_text, expiration_text, not_before_text, resources_header and not resources
        )
        object.__setattr__(message, "_spelling", spelling)
        return message

    def to_text(self) -> str:
        """The EIP-4361 text of this message (what the wallet signs)."""
        spelling = self._spelling or _Spelling(None, None, None, False)
        origin = self.domain if self.scheme is None else f"{self.scheme}://{self.domain}"
        lines = [origin + HEADER_SUFFIX, self.address, ""]
        if self.statement is not None:
            lines.append(self.statement)
        lines += [
            "",
            _URI_PREFIX + self.uri,
            _VERSION_PREFIX + self.version,
            _CHAIN_ID_PREFIX + str(self.chain_id),
            _NONCE_PREFIX + self.nonce,
            _ISSUED_AT_PREFIX + _spell(self.issued_at, spelling.issued_at),
        ]
        if self.expiration_time is not None:
            lines.append(
                _EXPIRATION_PREFIX + _spell(self.expiration_time, spelling.expiration_time)
            )
        if self.not_before is not None:
            lines.append(_NOT_BEFORE_PREFIX + _spell(self.not_before, spelling.not_before))
        if self.request_id is not None:
            lines.append(_REQUEST_ID_PREFIX + self.request_id)
        if self.resources or spelling.empty_resources_header:
            lines.append(_RESOURCES_LINE)
            lines += [_RESOURCE_PREFIX + r for r in self.resources]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _is_str_match(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _spell(value: datetime, original: str | None) -> str:
    if original is not None and parse_timestamp(original) == value:
        return original
    return format_timestamp(value)


class _Lines:
    """A cursor over the message's lines with ABNF-shaped helpers."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines
        self.index = 0  # lines consumed

    def done(self) -> bool:
        return self.index >= len(self._lines)

    def peek(self) -> str | None:
        return None if self.done() else self._lines[self.index]

    def next(self, what: str) -> str:
        if self.done():
            raise SiweMalformedError(f"message ends where {what} was expected")
        line = self._lines[self.index]
        self.index += 1
        return line

    def expect_blank(self) -> None:
        line = self.next("a blank line")
        if line:
            raise SiweMalformedError(
                f"line {self.index} must be blank, got {line!r}", line=self.index
            )

    def field(self, prefix: str) -> str:
        line = self.next(f"'{prefix.strip()}'")
        if not line.startswith(prefix):
            raise SiweMalformedError(
                f"line {self.index} must start with '{prefix}', got {line!r}",
                line=self.index,
                field=prefix.rstrip(": "),
            )
        return line[len(prefix) :]

    def optional_field(self, prefix: str) -> str | None:
        line = self.peek()
        if line is None or not line.startswith(prefix):
            return None
        self.index += 1
        return line[len(prefix) :]


# --------------------------------------------------------------------------- verify


def verify_siwe(
    text: str,
    signature: bytes,
    *,
    domain: str,
    chain_id: int,
    now: datetime,
    uri_prefix: str | None = None,
    scheme: str = "https",
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    max_age: timedelta | None = None,
) -> SiweMessage:
    """Verify a signed sign-in message for this service; return the parsed message.

    Checks, in order (each refusal its own :class:`SiweError` subclass):

    1. ``text`` conforms to EIP-4361 (:class:`SiweMalformedError`);
    2. its domain equals ``domain`` exactly (character for character, port included),
       and its scheme, when present, equals ``scheme`` ignoring case
       (:class:`SiweDomainError`);
    3. its chain id equals ``chain_id`` (:class:`SiweChainIdError`);
    4. with ``uri_prefix``: its URI is ``uri_prefix`` or below it at a ``/``, ``?`` or
       ``#`` boundary (:class:`SiweUriError`);
    5. ``now < expiration_time`` and, with ``max_age``, ``now - issued_at <= max_age``
       (:class:`SiweExpiredError`); ``now >= not_before`` and ``issued_at <= now +
       clock_skew`` (:class:`SiweNotYetValidError`);
    6. the EIP-191 ``personal_sign`` signer of ``text`` is the message's address, with a
       well-formed, low-s signature (:class:`SiweSignatureError`).

    The nonce is the caller's to check (issued by it, unexpired, single use):
    raise :class:`SiweNonceError` when it is not. ``now`` must be timezone-aware.
    """
    if now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    message = SiweMessage.parse(text)

    if message.domain != domain:
        raise SiweDomainError(
            f"the message is for {message.domain!r}, not {domain!r}", domain=message.domain
        )
    if message.scheme is not None and message.scheme.lower() != scheme.lower():
        raise SiweDomainError(
            f"the message is for scheme {message.scheme!r}, not {scheme!r}",
            scheme=message.scheme,
        )
    if message.chain_id != chain_id:
        raise SiweChainIdError(
            f"the message is bound to chain {message.chain_id}, not {chain_id}",
            chain_id=message.chain_id,
        )
    if uri_prefix is not None and not _under(message.uri, uri_prefix):
        raise SiweUriError(
            f"the message's URI {message.uri!r} is not under {uri_prefix!r}", uri=message.uri
        )

    if message.expiration_time is not None and now >= message.expiration_time:
        raise SiweExpiredError(
            f"the message expired at {format_timestamp(message.expiration_time)}",
            expiration_time=format_timestamp(message.expiration_time),
        )
    if max_age is not None and now - message.issued_at > max_age:
        raise SiweExpiredError(
            f"the message was issued more than {max_age} ago",
            issued_at=format_timestamp(message.issued_at),
        )
    if message.not_before is not None and now < message.not_before:
        raise SiweNotYetValidError(
            f"the message is not valid before {format_timestamp(message.not_before)}",
            not_before=format_timestamp(message.not_before),
        )
    if message.issued_at - now > clock_skew:
        raise SiweNotYetValidError(
            f"the message is issued in the future ({format_timestamp(message.issued_at)})",
            issued_at=format_timestamp(message.issued_at),
        )

    _check_personal_sign(text, signature, message.address)
    return message


def _under(uri: str, prefix: str) -> bool:
    if uri == prefix:
        return True
    if not uri.startswith(prefix):
        return False
    return prefix.endswith(("/", "?", "#")) or uri[len(prefix)] in "/?#"


def personal_sign_digest(text: str) -> bytes:
    """The EIP-191 (version ``0x45``, ``personal_sign``) digest of ``text``: what a wallet
    signs for a sign-in message."""
    data = text.encode("utf-8")
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode("ascii") + data)


def _check_personal_sign(text: str, signature: bytes, address: str) -> None:
    """:class:`SiweSignatureError` unless ``address`` signed ``text`` with ``personal_sign``
    (:func:`ledger.eip712.check_signature`: malformed and high-s signatures refused). A ``v`` of
    0 or 1, as some wallets give it, stands for 27 or 28."""
    if not isinstance(signature, bytes | bytearray):
        raise SiweSignatureError("the signature must be bytes")
    if len(signature) == 65 and signature[64] in (0, 1):
        signature = bytes(signature[:64]) + bytes((signature[64] + 27,))
    try:
        signer = check_signature(personal_sign_digest(text), bytes(signature), address)
    except SignatureError as exc:
        raise SiweSignatureError(exc.detail, **exc.context) from exc
    if signer is not None:
        raise SiweSignatureError("the signature is not by the message's address", address=address)
