"""ledger.siwe: EIP-4361 parsing, rendering and verification.

Test vectors, by source:

* ``EIP_EXAMPLE``: the "Example message" of EIP-4361 (ethereum/EIPs, ``EIPS/eip-4361.md``).
* ``ERC_EXAMPLES``: the three examples of ERC-4361 (ethereum/ERCs, ``ERCS/erc-4361.md``):
  implicit scheme, implicit scheme with explicit port, explicit scheme.
* ``SPRUCE_*``: the test vectors of the reference implementation, spruceid/siwe
  (``test/parsing_positive.json``, ``test/parsing_negative.json``,
  ``test/invalid_uris.json``, ``test/valid_chars.json``/``invalid_chars.json``,
  ``test/verification_positive.json``, ``test/verification_negative.json``), which the
  Python port spruceid/siwe-py runs as well. Their signatures were made by other
  implementations (ethers), so they check our EIP-191 recovery independently.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.eip712 import SECP256K1_HALF_N, SECP256K1_N
from ledger.errors import LedgerError
from ledger.siwe import (
    HEADER_SUFFIX,
    MAX_MESSAGE_LENGTH,
    SiweChainIdError,
    SiweDomainError,
    SiweError,
    SiweExpiredError,
    SiweMalformedError,
    SiweMessage,
    SiweNonceError,
    SiweNotYetValidError,
    SiweSignatureError,
    SiweUriError,
    format_timestamp,
    new_nonce,
    parse_timestamp,
    verify_siwe,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------- vectors

EIP_EXAMPLE = """service.org wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ServiceOrg Terms of Service: https://service.org/tos

URI: https://service.org/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json"""

_ERC_BODY = """ wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ExampleOrg Terms of Service: https://example.com/tos

URI: https://example.com/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json"""

#: (text, expected scheme, expected domain)
ERC_EXAMPLES = {
    "implicit scheme": ("example.com" + _ERC_BODY, None, "example.com"),
    "implicit scheme, explicit port": ("example.com:3388" + _ERC_BODY, None, "example.com:3388"),
    "explicit scheme": ("https://example.com" + _ERC_BODY, "https", "example.com"),
}

_SPRUCE_HEAD = (
    "service.org wants you to sign in with your Ethereum account:\n"
    "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\n"
)
_TOS = "I accept the ServiceOrg Terms of Service: https://service.org/tos"
_SPRUCE_TAIL = "URI: https://service.org/login\nVersion: 1\nChain ID: 1\nNonce: 32891757\n"


def _spruce(domain: str, statement: str | None, issued_at: str, resources: str = "") -> str:
    head = _SPRUCE_HEAD.replace("service.org", domain, 1)
    body = f"{statement}\n\n" if statement is not None else "\n"
    return head + body + _SPRUCE_TAIL + f"Issued At: {issued_at}" + resources


#: spruceid/siwe test/parsing_positive.json: name -> (message, fields)
SPRUCE_PARSING_POSITIVE: dict[str, tuple[str, dict[str, Any]]] = {
    "couple of optional fields": (
        _spruce(
            "service.org",
            _TOS,
            "2021-09-30T16:25:24.000Z",
            "\nResources:\n- ipfs://Qme7ss3ARVgxv6rXqVPiikMJ8u2NLgmgszg13pYrDKEoiu"
            "\n- https://example.com/my-web2-claim.json",
        ),
        {
            "domain": "service.org",
            "statement": _TOS,
            "issued_at": "2021-09-30T16:25:24.000Z",
            "resources": (
                "ipfs://Qme7ss3ARVgxv6rXqVPiikMJ8u2NLgmgszg13pYrDKEoiu",
                "https://example.com/my-web2-claim.json",
            ),
        },
    ),
    "no optional field": (
        _spruce("service.org", _TOS, "2021-09-30T16:25:24.000Z"),
        {"domain": "service.org", "statement": _TOS, "issued_at": "2021-09-30T16:25:24.000Z"},
    ),
    "timestamp without microseconds": (
        _spruce("service.org", _TOS, "2021-09-30T16:25:24Z"),
        {"domain": "service.org", "statement": _TOS, "issued_at": "2021-09-30T16:25:24Z"},
    ),
    "domain is RFC 3986 authority with IP": (
        _spruce("127.0.0.1", _TOS, "2021-09-30T16:25:24.000Z"),
        {"domain": "127.0.0.1", "statement": _TOS, "issued_at": "2021-09-30T16:25:24.000Z"},
    ),
    "domain is RFC 3986 authority with userinfo": (
        _spruce("test@127.0.0.1", _TOS, "2021-09-30T16:25:24.000Z"),
        {"domain": "test@127.0.0.1", "statement": _TOS, "issued_at": "2021-09-30T16:25:24.000Z"},
    ),
    "domain is RFC 3986 authority with port": (
        _spruce("127.0.0.1:8080", _TOS, "2021-09-30T16:25:24.000Z"),
        {"domain": "127.0.0.1:8080", "statement": _TOS, "issued_at": "2021-09-30T16:25:24.000Z"},
    ),
    "domain is RFC 3986 authority with userinfo and port": (
        _spruce("test@127.0.0.1:8080", _TOS, "2021-09-30T16:25:24.000Z"),
        {
            "domain": "test@127.0.0.1:8080",
            "statement": _TOS,
            "issued_at": "2021-09-30T16:25:24.000Z",
        },
    ),
    "no statement": (
        _spruce("service.org", None, "2021-09-30T16:25:24.000Z"),
        {"domain": "service.org", "statement": None, "issued_at": "2021-09-30T16:25:24.000Z"},
    ),
}

_L = "service.org wants you to sign in with your Ethereum account:\n"
_LOWER = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
_E = "0xe5A12547fe4E872D192E3eCecb76F2Ce1aeA4946"
_OPT = (
    "Expiration Time: 2023-03-17T12:45:13.610Z\nNot Before: 2022-03-17T12:45:13.610Z\n"
    "Request ID: some_id\nResources:\n- https://service.org/login"
)
_FULL_HEAD = f"{_L}{_E}\n\n{_TOS}\n\n"
_MAND = (
    "URI: https://service.org/login\nVersion: 1\nChain ID: 1\nNonce: 12341234\n"
    "Issued At: 2022-03-17T12:45:13.610Z\n"
)

#: spruceid/siwe test/parsing_negative.json (both stored revisions). Left out, because
#: they conform to the ABNF: "version not 1" (its text says "Version: 1") and "domain not
#: RFC4501 authority" (``not_rfc4501``: ``_`` is an RFC 3986 *unreserved* character).
SPRUCE_PARSING_NEGATIVE: dict[str, str] = {
    "missing mandatory field": f"{_L}0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\n{_TOS}\n\n"
    "Version: 1\nNonce: 32891757\nIssued At: 2021-09-30T16:25:24Z",
    "extra line breaks": f"{_L}0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\n\n{_TOS}\n\n"
    "URI: https://service.org/login\nVersion: 1\nNonce: 32891757\nIssued At: 2021-09-30T16:25:24Z",
    "non-ISO datetime": f"{_L}0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\n{_TOS}\n\n"
    "URI: https://service.org/login\nVersion: 1\nNonce: 32891757\n"
    "Issued At: Wed Oct 05 2011 16:48:00 GMT+0200 (CEST)",
    "out of order fields": f"{_L}0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\n{_TOS}\n\n"
    "Version: 1\nNonce: 32891757\nURI: https://service.org/login\n"
    "Issued At: 2021-09-30T16:25:24.000Z",
    "wrong version": f"{_L}0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\n{_TOS}\n\n"
    "URI: https://service.org/login\nVersion: 2\nNonce: 32891757\n"
    "Issued At: 2021-09-30T16:25:24.000Z",
    "address not eip-55": f"{_L}{_LOWER}\n\n{_TOS}\n\nURI: https://service.org/login\n"
    "Version: 2\nNonce: 32891757\nIssued At: 2021-09-30T16:25:24.000Z",
    "missing domain": " wants you to sign in with your Ethereum account:\n"
    f"{_E}\n\n{_TOS}\n\n{_MAND}{_OPT}",
    "missing address": f"{_L}\n\n{_TOS}\n\n{_MAND}{_OPT}",
    "missing uri": f"{_FULL_HEAD}\nVersion: 1\nChain ID: 1\nNonce: 12341234\n"
    f"Issued At: 2022-03-17T12:45:13.610Z\n{_OPT}",
    "missing version": f"{_FULL_HEAD}URI: https://service.org/login\n\nChain ID: 1\n"
    f"Nonce: 12341234\nIssued At: 2022-03-17T12:45:13.610Z\n{_OPT}",
    "missing chainId": f"{_FULL_HEAD}URI: https://service.org/login\nVersion: 1\n\n"
    f"Nonce: 12341234\nIssued At: 2022-03-17T12:45:13.610Z\n{_OPT}",
    "missing nonce": f"{_FULL_HEAD}URI: https://service.org/login\nVersion: 1\nChain ID: 1\n\n"
    f"Issued At: 2022-03-17T12:45:13.610Z\n{_OPT}",
    "missing issuedAt": f"{_FULL_HEAD}URI: https://service.org/login\nVersion: 1\nChain ID: 1\n"
    f"Nonce: 12341234\n\n{_OPT}",
    "out of order uri": f"{_FULL_HEAD}Version: 1\nURI: https://service.org/login\nChain ID: 1\n"
    f"Nonce: 12341234\nIssued At: 2022-03-17T12:45:13.610Z\n{_OPT}",
    "out of order version": f"{_FULL_HEAD}URI: https://service.org/login\nChain ID: 1\n"
    f"Version: 1\nNonce: 12341234\nIssued At: 2022-03-17T12:45:13.610Z\n{_OPT}",
    "out of order chainId": f"{_FULL_HEAD}URI: https://service.org/login\nVersion: 1\n"
    f"Nonce: 12341234Chain ID: 1\n\nIssued At: 2022-03-17T12:45:13.610Z\n{_OPT}",
    "out of order nonce": f"{_FULL_HEAD}URI: https://service.org/login\nVersion: 1\n"
    f"Chain ID: 1\nIssued At: 2022-03-17T12:45:13.610Z\nNonce: 12341234\n{_OPT}",
    "out of order issuedAt": f"{_FULL_HEAD}URI: https://service.org/login\nVersion: 1\n"
    "Chain ID: 1\nNonce: 12341234\nExpiration Time: 2023-03-17T12:45:13.610Z\n"
    "Issued At: 2022-03-17T12:45:13.610Z\nNot Before: 2022-03-17T12:45:13.610Z\n"
    "Request ID: some_id\nResources:\n- https://service.org/login",
    "out of order expirationTime": f"{_FULL_HEAD}{_MAND}"
    "Not Before: 2022-03-17T12:45:13.610Z\nExpiration Time: 2023-03-17T12:45:13.610Z\n"
    "Request ID: some_id\nResources:\n- https://service.org/login",
    "out of order notBefore": f"{_FULL_HEAD}{_MAND}"
    "Expiration Time: 2023-03-17T12:45:13.610Z\nRequest ID: some_id\n"
    "Not Before: 2022-03-17T12:45:13.610Z\nResources:\n- https://service.org/login",
    "out of order requestId": f"{_FULL_HEAD}{_MAND}"
    "Expiration Time: 2023-03-17T12:45:13.610Z\nNot Before: 2022-03-17T12:45:13.610Z\n"
    "Resources:\n- https://service.org/login\nRequest ID: some_id",
    "out of order resources": f"{_FULL_HEAD}{_MAND}"
    "Expiration Time: 2023-03-17T12:45:13.610Z\nResources:\n- https://service.org/login\n"
    "Not Before: 2022-03-17T12:45:13.610Z\nRequest ID: some_id",
    "address not EIP-55": f"{_L}0xe5a12547fe4e872d192e3ececb76f2ce1aea4946\n\n{_TOS}\n\n"
    f"{_MAND}{_OPT}",
    "statement has line break": f"{_L}{_E}\n\nI accept the ServiceOrg Terms of Service: \n"
    f"https://service.org/tos\n\n{_MAND}{_OPT}",
    "uri is non-RFC 3986": f"{_FULL_HEAD}URI: _not_a_rfc3986_valid_uri_\nVersion: 1\n"
    f"Chain ID: 1\nNonce: 12341234\nIssued At: 2022-03-17T12:45:13.610Z\n{_OPT}",
    "not a valid chainId": f"{_FULL_HEAD}URI: https://service.org/login\nVersion: 1\n"
    f"Chain ID: ?\nNonce: 12341234\nIssued At: 2022-03-17T12:45:13.610Z\n{_OPT}",
    "nonce with less then 8 chars": f"{_FULL_HEAD}URI: https://service.org/login\nVersion: 1\n"
    f"Chain ID: 1\nNonce: 1234567\nIssued At: 2022-03-17T12:45:13.610Z\n{_OPT}",
    "non-ISO 8601 issuedAt": f"{_FULL_HEAD}URI: https://service.org/login\nVersion: 1\n"
    "Chain ID: 1\nNonce: 12341234\nIssued At: Wed Oct 05 2011 16:48:00 GMT+0200 (CEST)\n"
    f"{_OPT}",
    "non-ISO 8601 expirationTime": f"{_FULL_HEAD}{_MAND}"
    "Expiration Time: Wed Oct 05 2011 16:48:00 GMT+0200 (CEST)\n"
    "Not Before: 2022-03-17T12:45:13.610Z\nRequest ID: some_id\nResources:\n"
    "- https://service.org/login",
    "non-ISO 8601 notBefore": f"{_FULL_HEAD}{_MAND}"
    "Expiration Time: 2023-03-17T12:45:13.610Z\n"
    "Not Before: Wed Oct 05 2011 16:48:00 GMT+0200 (CEST)\nRequest ID: some_id\nResources:\n"
    "- https://service.org/login",
    "resources not separated by line break": f"{_FULL_HEAD}{_MAND}"
    "Expiration Time: 2023-03-17T12:45:13.610Z\nNot Before: 2022-03-17T12:45:13.610Z\n"
    "Request ID: some_id\nResources:\n- https://service.org/login - https://service.org/login/2",
    "first resource is not-RFC3986": f"{_FULL_HEAD}{_MAND}"
    "Expiration Time: 2023-03-17T12:45:13.610Z\nNot Before: 2022-03-17T12:45:13.610Z\n"
    "Request ID: some_id\nResources:\n- https://service.org/login\n- _not_a_rfc3986_valid_uri_",
    "second resource not-RFC 3986": f"{_FULL_HEAD}{_MAND}"
    "Expiration Time: 2023-03-17T12:45:13.610Z\nNot Before: 2022-03-17T12:45:13.610Z\n"
    "Request ID: some_id\nResources:\n- _not_a_rfc3986_valid_uri_\n- https://service.org/login",
}

#: spruceid/siwe test/invalid_uris.json: each URI inside an otherwise valid message.
SPRUCE_INVALID_URIS = [
    "uri://[::0.0.0.256]/p/path",
    "uri://[::300.0.0.0]/p/path",
    "uri://[::0.ff.0.255]",
    "uri://[::0.0.256.0]",
    "uri://[ffff:abcd:0:10:200:3000:f8a:1:ffff]",
    "uri://[ffff:abcd:0:10:200:3000:f8a]",
    "uri://[ffff:abcd:0:10:200:3000:ff:255.255.255.255]",
    "uri://[::1:2:3:4:5:6:7:8]",
    "uri://[::1:2:3:4:5:6:198.162.10.255]",
    "uri://[1:2:3:4:5:6:7:8::]",
    "uri://[1:2:3:4:5:6::198.162.10.255]",
    "uri://[1:2:3:4:5::6:7:8]",
    "uri://[1:2:3:4:5::6:198.162.10.255]",
    "://user:pass@example.com:123/one/two.three?q1=a1&q2=a2#body",
    "uri://user:pass@example.com:123/one/two.three ?q1=a1&q2=a2#body",
    "uri://user:pass@example.com:123/one/two.three?q1=a1&q2=a2 #body",
]

#: spruceid/siwe test/valid_chars.json and invalid_chars.json, the ``statement`` rule.
SPRUCE_VALID_STATEMENT = (
    ":/?#[]@!$&'()*+,;= abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
)
SPRUCE_INVALID_STATEMENT_CHARS = ["`", "<", ">", "{", "|", "}"]
#: ... and the ``scheme`` rule.
SPRUCE_VALID_SCHEME = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-."

_LOGIN = {
    "domain": "login.xyz",
    "statement": "Sign-In With Ethereum Example Statement",
    "uri": "https://login.xyz",
    "version": "1",
    "chain_id": 1,
}

#: spruceid/siwe test/verification_positive.json (fields, signature, verification time).
SPRUCE_VERIFICATION_POSITIVE: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "example message": (
        {
            **_LOGIN,
            "address": "0x9D85ca56217D2bb651b00f15e694EB7E713637D4",
            "nonce": "bTyXgcQxn2htgkjJn",
            "issued_at": "2022-01-27T17:09:38.578Z",
            "expiration_time": "2100-01-07T14:31:43.952Z",
        },
        "0xdc35c7f8ba2720df052e0092556456127f00f7707eaa8e3bbff7e56774e7f2e05a093cfc9e02964c33d8"
        "6e8e066e221b7d153d27e5a2e97ccd5ca7d3f2ce06cb1b",
        None,
    ),
    "not yet valid": (
        {
            **_LOGIN,
            "address": "0xE6D3Aa1F561A215E5eb1f02Ba8705385F03fCaFB",
            "nonce": "lx2nx4so",
            "issued_at": "2022-01-05T14:27:30.883Z",
            "not_before": "2100-01-07T14:31:43.952Z",
        },
        "0xc2539ace78f13c7eb8c0852d38d269a6f97bebd9f7872097d2e3137b541f8bf50176062a46eeea83086b"
        "d2721423fb5755a932ff6ccc046ed482d14e4576042f1c",
        "2101-01-07T14:31:43.952Z",
    ),
    "recovery byte starting at 0 tally_example": (
        {
            "domain": "www.tally.xyz",
            "address": "0xc95EB884FE852e241D409234bfC7045CB9E31BD7",
            "statement": "Sign in with Ethereum to Tally",
            "uri": "https://tally.xyz",
            "version": "1",
            "chain_id": 1,
            "nonce": "15050747",
            "issued_at": "2022-06-30T14:08:51.382Z",
        },
        "0x8c46b6eb8505939892d8e9b075f89f8277321b17b993151f37810cdda38cce6f4a85909d2b53e6a14629"
        "c74c0ac38bf4becde78ee5b2529812bf6cceaf7b2a2501",
        None,
    ),
}

#: spruceid/siwe verification vectors "expired message" (positive at time 2020-01-05 there,
#: negative by default): its Issued At (2022) is after its Expiration Time (2021).
SPRUCE_EXPIRED = (
    {
        **_LOGIN,
        "address": "0x2ecA0068307e706741445764A3D6A4402aC2A5a9",
        "nonce": "lx2nx4so",
        "issued_at": "2022-01-05T14:27:30.883Z",
        "expiration_time": "2021-01-05T00:00:00Z",
    },
    "0x7337bc2826c7678cd6bc84f5b3b236efc969b0451f9feca2328b1d3401b030c113f19bdba359ba3f52762c"
    "66e9147311fa95fe598a1a4ec9bb383a7b4e3874241b",
)
#: spruceid/siwe verification_negative.json "wrong signature" (a valid signature of
#: something else).
SPRUCE_WRONG_SIGNATURE = (
    {
        **_LOGIN,
        "address": "0x6Da01670d8fc844e736095918bbE11fE8D564163",
        "nonce": "rmplqh1gf",
        "issued_at": "2022-01-05T14:31:43.954Z",
        "expiration_time": "2100-01-07T14:31:43.952Z",
    },
    "0x31df81dc02344c9156e6f71da46e2db624b38f8f806290d670d46492b834b2e7575cbce9f48169356cfb577b"
    "910d8e30732fcf23c1ac0021d08b945ed7ee118e1b",
)


def _message(fields: dict[str, Any]) -> SiweMessage:
    values = dict(fields)
    for key in ("issued_at", "expiration_time", "not_before"):
        if key in values:
            values[key] = parse_timestamp(values[key])
    return SiweMessage(**values)


# ----------------------------------------------------------------------------- helpers

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
ACCOUNT = Account.from_key(KEY)
OTHER = Account.from_key(b"\x11" * 32)
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DOMAIN = "medtrail.example:8443"


def base_message(**changes: Any) -> SiweMessage:
    values: dict[str, Any] = {
        "domain": DOMAIN,
        "address": ACCOUNT.address,
        "statement": "Sign in to medtrail to see who accessed your health records.",
        "uri": "https://medtrail.example:8443/v1/auth/siwe",
        "chain_id": 31337,
        "nonce": "Zx8pQ2rT7mNk4vWb",
        "issued_at": NOW - timedelta(seconds=30),
        "expiration_time": NOW + timedelta(minutes=10),
        "not_before": NOW - timedelta(seconds=30),
        "request_id": "req-42",
        "resources": ("https://medtrail.example:8443/v1/patients/me/accesses",),
    }
    values.update(changes)
    return SiweMessage(**values)


def sign(text: str, account: Any = ACCOUNT) -> bytes:
    return bytes(account.sign_message(encode_defunct(text=text)).signature)


def verify(text: str, signature: bytes, **overrides: Any) -> SiweMessage:
    kwargs: dict[str, Any] = {"domain": DOMAIN, "chain_id": 31337, "now": NOW}
    kwargs.update(overrides)
    return verify_siwe(text, signature, **kwargs)


def signed(**changes: Any) -> tuple[str, bytes]:
    text = base_message(**changes).to_text()
    return text, sign(text)


def replace_line(text: str, prefix: str, new: str | None) -> str:
    lines = text.split("\n")
    index = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    if new is None:
        del lines[index]
    else:
        lines[index] = new
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the EIP


def test_eip_example_message_parses_to_its_fields() -> None:
    message = SiweMessage.parse(EIP_EXAMPLE)
    assert message == SiweMessage(
        domain="service.org",
        address="0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
        statement="I accept the ServiceOrg Terms of Service: https://service.org/tos",
        uri="https://service.org/login",
        version="1",
        chain_id=1,
        nonce="32891756",
        issued_at=datetime(2021, 9, 30, 16, 25, 24, tzinfo=UTC),
        resources=(
            "ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
            "https://example.com/my-web2-claim.json",
        ),
    )
    assert message.scheme is None
    assert message.expiration_time is None
    assert message.not_before is None
    assert message.request_id is None


def test_eip_example_message_is_rendered_exactly_from_its_fields() -> None:
    rebuilt = dataclasses.replace(SiweMessage.parse(EIP_EXAMPLE))  # forgets the spelling
    assert rebuilt.to_text() == EIP_EXAMPLE
    assert str(rebuilt) == EIP_EXAMPLE


@pytest.mark.parametrize("name", list(ERC_EXAMPLES))
def test_erc_examples(name: str) -> None:
    text, scheme, domain = ERC_EXAMPLES[name]
    message = SiweMessage.parse(text)
    assert message.scheme == scheme
    assert message.domain == domain
    assert message.to_text() == text
    assert dataclasses.replace(message).to_text() == text


# ----------------------------------------------------------------------------- spruceid


@pytest.mark.parametrize("name", list(SPRUCE_PARSING_POSITIVE))
def test_spruce_parsing_positive(name: str) -> None:
    text, fields = SPRUCE_PARSING_POSITIVE[name]
    message = SiweMessage.parse(text)
    assert message.domain == fields["domain"]
    assert message.address == "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
    assert message.statement == fields["statement"]
    assert message.uri == "https://service.org/login"
    assert message.version == "1"
    assert message.chain_id == 1
    assert message.nonce == "32891757"
    assert message.issued_at == parse_timestamp(fields["issued_at"])
    assert message.resources == fields.get("resources", ())
    assert message.to_text() == text  # exact, ".000Z" included


@pytest.mark.parametrize("name", list(SPRUCE_PARSING_NEGATIVE))
def test_spruce_parsing_negative(name: str) -> None:
    with pytest.raises(SiweMalformedError):
        SiweMessage.parse(SPRUCE_PARSING_NEGATIVE[name])


@pytest.mark.parametrize("uri", SPRUCE_INVALID_URIS)
def test_spruce_invalid_uris(uri: str) -> None:
    text = _spruce("service.org", None, "2021-09-30T16:25:24.000Z").replace(
        "URI: https://service.org/login", f"URI: {uri}"
    )
    with pytest.raises(SiweMalformedError, match="uri"):
        SiweMessage.parse(text)


def test_spruce_valid_statement_and_scheme_characters() -> None:
    message = base_message(statement=SPRUCE_VALID_STATEMENT, scheme=SPRUCE_VALID_SCHEME)
    assert SiweMessage.parse(message.to_text()) == message


@pytest.mark.parametrize("char", [*SPRUCE_INVALID_STATEMENT_CHARS, '"', "%", "\\", "^", "\t"])
def test_spruce_invalid_statement_characters(char: str) -> None:
    with pytest.raises(SiweMalformedError, match="statement"):
        base_message(statement=f"I accept {char}")
    text = base_message().to_text().replace("records.", f"records{char}")
    with pytest.raises(SiweMalformedError, match="statement"):
        SiweMessage.parse(text)


@pytest.mark.parametrize("scheme", [" https", "1http", "ht:tp", "h#", "h?", "h@", "h!", "h~"])
def test_spruce_invalid_scheme_characters(scheme: str) -> None:
    with pytest.raises(SiweMalformedError, match="scheme"):
        base_message(scheme=scheme)
    text = (
        base_message(scheme="https").to_text().replace("https://medtrail", scheme + "://medtrail")
    )
    with pytest.raises(SiweMalformedError):
        SiweMessage.parse(text)


@pytest.mark.parametrize("name", list(SPRUCE_VERIFICATION_POSITIVE))
def test_spruce_verification_positive(name: str) -> None:
    fields, signature, time = SPRUCE_VERIFICATION_POSITIVE[name]
    message = _message(fields)
    now = parse_timestamp(time) if time else datetime(2023, 1, 1, tzinfo=UTC)
    verified = verify_siwe(
        message.to_text(),
        bytes.fromhex(signature[2:]),
        domain=fields["domain"],
        chain_id=1,
        now=now,
    )
    assert verified == message


def test_spruce_expired_message() -> None:
    fields, signature = SPRUCE_EXPIRED
    text = _message(fields).to_text()
    sig = bytes.fromhex(signature[2:])
    at_2020 = datetime(2020, 1, 5, tzinfo=UTC)
    # The reference accepts it at 2020-01-05; we also refuse an Issued At in the future.
    with pytest.raises(SiweNotYetValidError, match="issued in the future"):
        verify_siwe(text, sig, domain="login.xyz", chain_id=1, now=at_2020)
    verify_siwe(
        text, sig, domain="login.xyz", chain_id=1, now=at_2020, clock_skew=timedelta(days=800)
    )
    with pytest.raises(SiweExpiredError):  # spruceid's negative: verified "now"
        verify_siwe(text, sig, domain="login.xyz", chain_id=1, now=NOW)


def test_spruce_domain_binding_custom_time_and_custom_nonce() -> None:
    fields, signature, _ = SPRUCE_VERIFICATION_POSITIVE["example message"]
    text = _message(fields).to_text()
    sig = bytes.fromhex(signature[2:])
    with pytest.raises(SiweDomainError):
        verify_siwe(text, sig, domain="example.com", chain_id=1, now=NOW)
    with pytest.raises(SiweExpiredError):
        verify_siwe(text, sig, domain="login.xyz", chain_id=1, now=datetime(2200, 1, 5, tzinfo=UTC))
    # "custom nonce": the nonce is the caller's check, made on the returned message.
    message = verify_siwe(text, sig, domain="login.xyz", chain_id=1, now=NOW)

    def check_nonce(expected: str) -> None:
        if message.nonce != expected:
            raise SiweNonceError("unknown nonce", nonce=message.nonce)

    check_nonce("bTyXgcQxn2htgkjJn")
    with pytest.raises(SiweNonceError):
        check_nonce("6548asdgf")


def test_spruce_wrong_signature() -> None:
    fields, signature = SPRUCE_WRONG_SIGNATURE
    with pytest.raises(SiweSignatureError, match="not by the message's address"):
        verify_siwe(
            _message(fields).to_text(),
            bytes.fromhex(signature[2:]),
            domain="login.xyz",
            chain_id=1,
            now=NOW,
        )


def test_spruce_not_yet_valid() -> None:
    fields, signature, _ = SPRUCE_VERIFICATION_POSITIVE["not yet valid"]
    with pytest.raises(SiweNotYetValidError):
        verify_siwe(
            _message(fields).to_text(),
            bytes.fromhex(signature[2:]),
            domain="login.xyz",
            chain_id=1,
            now=NOW,
        )


# ----------------------------------------------------------------------------- verify: ok


def test_verify_accepts_a_good_sign_in() -> None:
    text, signature = signed()
    message = verify(text, signature, uri_prefix="https://medtrail.example:8443/v1/auth")
    assert message == base_message()
    assert message.address == ACCOUNT.address


def test_verify_accepts_minimal_message_and_v_0_1() -> None:
    text = SiweMessage(
        domain=DOMAIN,
        address=ACCOUNT.address,
        uri="https://medtrail.example:8443",
        chain_id=31337,
        nonce=new_nonce(),
        issued_at=NOW,
    ).to_text()
    signature = sign(text)
    verify(text, signature)
    verify(text, signature[:64] + bytes((signature[64] - 27,)))  # v in {0, 1}
    verify(text, bytearray(signature))  # type: ignore[arg-type]


def test_verify_boundaries() -> None:
    text, signature = signed(not_before=NOW, issued_at=NOW, expiration_time=NOW + timedelta(1))
    verify(text, signature)  # now == not_before is valid
    verify(text, signature, now=NOW + timedelta(1) - timedelta(microseconds=1))
    text, signature = signed(issued_at=NOW + timedelta(seconds=60))
    verify(text, signature)  # within the default 60 s skew
    text, signature = signed(issued_at=NOW - timedelta(minutes=5))
    verify(text, signature, max_age=timedelta(minutes=5))


def test_verify_with_explicit_scheme() -> None:
    text, signature = signed(scheme="https")
    verify(text, signature)
    text, signature = signed(scheme="http")
    verify(text, signature, scheme="http")
    verify(text, signature, scheme="HTTP")


def test_verify_compares_timestamps_as_instants_across_offsets() -> None:
    plus_two = timezone(timedelta(hours=2))
    text, signature = signed(expiration_time=(NOW + timedelta(seconds=1)).astimezone(plus_two))
    assert "+02:00" in text
    verify(text, signature)
    with pytest.raises(SiweExpiredError):
        verify(text, signature, now=NOW + timedelta(seconds=1))


# ----------------------------------------------------------------------------- verify: refusals


def test_refuses_wrong_domain() -> None:
    text, signature = signed()
    with pytest.raises(SiweDomainError, match=r"medtrail\.example:8443"):
        verify(text, signature, domain="evil.example")


def test_refuses_same_host_other_port() -> None:
    text, signature = signed()
    with pytest.raises(SiweDomainError):
        verify(text, signature, domain="medtrail.example")


def test_refuses_wrong_scheme() -> None:
    text, signature = signed(scheme="http")
    with pytest.raises(SiweDomainError, match="scheme"):
        verify(text, signature)


def test_refuses_wrong_chain_id() -> None:
    text, signature = signed(chain_id=1)
    with pytest.raises(SiweChainIdError, match="chain 1"):
        verify(text, signature)


@pytest.mark.parametrize(
    "uri",
    [
        "https://medtrail.example:8443/v1/authx",  # shares the prefix, not at a boundary
        "https://medtrail.example:8443@evil.example/v1/auth",
        "https://evil.example/v1/auth",
    ],
)
def test_refuses_uri_outside_prefix(uri: str) -> None:
    text, signature = signed(uri=uri)
    with pytest.raises(SiweUriError):
        verify(text, signature, uri_prefix="https://medtrail.example:8443/v1/auth")


def test_uri_prefix_boundaries() -> None:
    prefix = "https://medtrail.example:8443/v1/auth"
    for uri in (prefix, prefix + "/siwe", prefix + "?x=1", prefix + "#f"):
        text, signature = signed(uri=uri)
        verify(text, signature, uri_prefix=prefix)
    text, signature = signed(uri=prefix + "x")
    verify(text, signature, uri_prefix="https://medtrail.example:8443/v1/")  # prefix ends in /


def test_refuses_expired() -> None:
    text, signature = signed(expiration_time=NOW)
    with pytest.raises(SiweExpiredError, match="expired"):
        verify(text, signature)  # now == expiration_time is expired


def test_refuses_older_than_max_age() -> None:
    text, signature = signed(issued_at=NOW - timedelta(minutes=5, seconds=1))
    with pytest.raises(SiweExpiredError, match="more than"):
        verify(text, signature, max_age=timedelta(minutes=5))


def test_refuses_not_yet_valid() -> None:
    text, signature = signed(not_before=NOW + timedelta(microseconds=1))
    with pytest.raises(SiweNotYetValidError, match="not valid before"):
        verify(text, signature)


def test_refuses_issued_in_the_future() -> None:
    text, signature = signed(issued_at=NOW + timedelta(seconds=61), not_before=None)
    with pytest.raises(SiweNotYetValidError, match="future"):
        verify(text, signature)
    verify(text, signature, clock_skew=timedelta(seconds=61))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("Sign in to medtrail", "Sign in to medtrai1"),
        ("Nonce: Zx8pQ2rT7mNk4vWb", "Nonce: Zx8pQ2rT7mNk4vWc"),
        ("Request ID: req-42", "Request ID: req-43"),
        ("/accesses", "/grants"),
    ],
)
def test_refuses_tampered_text(old: str, new: str) -> None:
    text, signature = signed()
    assert old in text
    with pytest.raises(SiweSignatureError, match="not by the message's address"):
        verify(text.replace(old, new), signature)


def test_refuses_signature_by_another_key() -> None:
    text = base_message().to_text()
    with pytest.raises(SiweSignatureError, match="not by the message's address"):
        verify(text, sign(text, OTHER))


def test_refuses_claimed_address_of_another_key() -> None:
    # The signer is genuine, but the message claims someone else's address.
    text = base_message(address=OTHER.address).to_text()
    with pytest.raises(SiweSignatureError):
        verify(text, sign(text, ACCOUNT))


def test_refuses_high_s_signature_that_eth_account_accepts() -> None:
    text, signature = signed()
    s = int.from_bytes(signature[32:64], "big")
    assert s <= SECP256K1_HALF_N
    high = signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - signature[64],))
    # eth-account recovers the same signer from the malleated signature ...
    assert Account.recover_message(encode_defunct(text=text), signature=high) == ACCOUNT.address
    # ... we do not accept it.
    with pytest.raises(SiweSignatureError, match="malleable"):
        verify(text, high)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda sig: sig[:64], "65 bytes"),
        (lambda sig: sig + b"\x00", "65 bytes"),
        (lambda sig: b"", "65 bytes"),
        (lambda sig: sig[:64] + b"\x1d", "v must be"),
        (lambda sig: sig[:64] + b"\x02", "v must be"),
        (lambda sig: bytes(32) + sig[32:], r"r must be in \[1, n-1\]"),
        (lambda sig: sig[:32] + bytes(32) + sig[64:], r"s must be in \[1, n-1\]"),
        (lambda sig: SECP256K1_N.to_bytes(32, "big") + sig[32:], r"r must be in \[1, n-1\]"),
        (lambda sig: sig.hex(), "must be bytes"),
    ],
)
def test_refuses_malformed_signatures(mutate: Any, match: str) -> None:
    text, signature = signed()
    with pytest.raises(SiweSignatureError, match=match):
        verify(text, mutate(signature))


def test_refuses_unrecoverable_signature() -> None:
    text, signature = signed()
    # r = an x coordinate with no point on the curve (x = 5 has no square root mod p)
    bad = (5).to_bytes(32, "big") + signature[32:]
    with pytest.raises(SiweSignatureError):
        verify(text, bad)


def test_verify_refuses_malformed_text_before_anything_else() -> None:
    with pytest.raises(SiweMalformedError):
        verify("hello", b"\x00" * 65)


def test_verify_needs_aware_now() -> None:
    text, signature = signed()
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(text, signature, now=datetime(2025, 3, 1, 12, 0))


# ----------------------------------------------------------------------------- parse: refusals

GOOD = base_message().to_text()


@pytest.mark.parametrize(
    "prefix",
    ["URI: ", "Version: ", "Chain ID: ", "Nonce: ", "Issued At: "],
)
def test_refuses_missing_mandatory_line(prefix: str) -> None:
    with pytest.raises(SiweMalformedError):
        SiweMessage.parse(replace_line(GOOD, prefix, None))


@pytest.mark.parametrize(
    "text",
    [
        GOOD + "\n",  # trailing newline
        GOOD + "\n- https://medtrail.example/extra\nFoo: bar",
        GOOD.replace("Version: 1\n", "Version: 1\nFoo: bar\n"),  # unknown field
        GOOD.replace("Nonce: Zx8pQ2rT7mNk4vWb\n", "Nonce: Zx8pQ2rT7mNk4vWb\n" * 2),  # twice
        GOOD.replace("\n\nURI:", "\n\n\nURI:"),  # an extra blank line
        GOOD.replace("records.\n\n", "records.\n"),  # a missing blank line
        GOOD.replace("\n\nSign in", "\nSign in"),  # no blank line after the address
        GOOD.replace("Request ID: req-42\n", "") + "\nRequest ID: req-42",  # out of order
        GOOD.replace("\n", "\r\n"),  # CRLF
        "\n" + GOOD,  # leading newline
        GOOD.replace("Resources:", "Resources: "),
        GOOD.replace("\n- https", "\n-https"),
    ],
)
def test_refuses_extra_missing_or_misplaced_lines(text: str) -> None:
    with pytest.raises(SiweMalformedError):
        SiweMessage.parse(text)


@pytest.mark.parametrize(
    "header",
    [
        "medtrail.example:8443 wants you to sign in with your Ethereum account",
        "medtrail.example:8443 wants you to sign in with your ethereum account:",
        "medtrail.example:8443  wants you to sign in with your Ethereum account:",
        "medtrail.example:8443 wants you to sign in with your Solana account:",
        " wants you to sign in with your Ethereum account:",
        "https:// wants you to sign in with your Ethereum account:",
        "medtrail example wants you to sign in with your Ethereum account:",
        "medtrail.example/path wants you to sign in with your Ethereum account:",
        "[::1 wants you to sign in with your Ethereum account:",
    ],
)
def test_refuses_bad_header(header: str) -> None:
    text = header + GOOD[GOOD.index("\n") :]
    with pytest.raises(SiweMalformedError):
        SiweMessage.parse(text)


@pytest.mark.parametrize(
    "domain", ["localhost", "127.0.0.1:8080", "[::1]:8443", "user:pw@host", "xn--bcher-kva.de"]
)
def test_accepts_rfc3986_domains(domain: str) -> None:
    message = base_message(domain=domain)
    assert SiweMessage.parse(message.to_text()) == message


@pytest.mark.parametrize(
    "address",
    [
        ACCOUNT.address.lower(),  # no checksum
        "0x" + ACCOUNT.address[2:].upper(),
        ACCOUNT.address[:-1] + ACCOUNT.address[-1].swapcase()
        if ACCOUNT.address[-1].isalpha()
        else ACCOUNT.address[:3] + ACCOUNT.address[3].swapcase() + ACCOUNT.address[4:],
        ACCOUNT.address[:-1],  # 39 digits
        ACCOUNT.address + "0",  # 41 digits
        ACCOUNT.address[2:],  # no 0x
        "0X" + ACCOUNT.address[2:],
        ACCOUNT.address[:-1] + "g",
    ],
)
def test_refuses_bad_checksum_address(address: str) -> None:
    with pytest.raises(SiweMalformedError, match="address"):
        SiweMessage.parse(GOOD.replace(ACCOUNT.address, address))
    with pytest.raises(SiweMalformedError, match="address"):
        base_message(address=address)


def test_accepts_digit_only_address() -> None:
    address = "0x" + "1234567890" * 4
    assert to_checksum_address(address) == address
    assert SiweMessage.parse(GOOD.replace(ACCOUNT.address, address)).address == address


@pytest.mark.parametrize(
    "timestamp",
    [
        "2025-03-01T12:00:00",  # no offset
        "2025-03-01 12:00:00Z",  # space
        "2025-03-01T12:00Z",  # no seconds
        "2025-3-01T12:00:00Z",
        "2025-02-30T12:00:00Z",  # no such day
        "2025-13-01T12:00:00Z",
        "2025-03-01T24:00:00Z",
        "2025-03-01T12:60:00Z",
        "2025-06-30T23:59:60Z",  # leap second
        "2025-03-01T12:00:00+24:00",
        "2025-03-01T12:00:00+05:60",
        "2025-03-01T12:00:00+0500",
        "2025-03-01T12:00:00.Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00",  # beyond datetime in UTC
        "2025-03-01T12:00:00ZZ",
        "١٢٣٤-03-01T12:00:00Z",  # non-ASCII digits
        "Wed Oct 05 2011 16:48:00 GMT+0200 (CEST)",
        "",
    ],
)
def test_refuses_bad_timestamps(timestamp: str) -> None:
    with pytest.raises(SiweMalformedError):
        parse_timestamp(timestamp)
    for prefix in ("Issued At: ", "Expiration Time: ", "Not Before: "):
        with pytest.raises(SiweMalformedError):
            SiweMessage.parse(replace_line(GOOD, prefix, prefix + timestamp))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01T12:00:00Z", datetime(2025, 3, 1, 12, tzinfo=UTC)),
        ("2025-03-01t12:00:00z", datetime(2025, 3, 1, 12, tzinfo=UTC)),
        ("2025-03-01T12:00:00.5Z", datetime(2025, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2025-03-01T12:00:00.123456789Z", datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2025-03-01T14:00:00+02:00", datetime(2025, 3, 1, 12, tzinfo=UTC)),
        ("2025-03-01T12:00:00-00:00", datetime(2025, 3, 1, 12, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_parses_rfc3339_timestamps(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected
    message = SiweMessage.parse(replace_line(GOOD, "Issued At: ", "Issued At: " + text))
    assert message.issued_at == expected
    assert message.to_text().split("\n") == replace_line(
        GOOD, "Issued At: ", "Issued At: " + text
    ).split("\n")


def test_format_timestamp() -> None:
    assert format_timestamp(datetime(2025, 3, 1, 12, tzinfo=UTC)) == "2025-03-01T12:00:00Z"
    assert (
        format_timestamp(datetime(5, 3, 1, 12, 0, 0, 120000, tzinfo=UTC))
        == "0005-03-01T12:00:00.12Z"
    )
    minus = timezone(-timedelta(hours=3, minutes=30))
    assert format_timestamp(datetime(2025, 3, 1, 12, tzinfo=minus)) == "2025-03-01T12:00:00-03:30"
    odd = timezone(timedelta(minutes=17, seconds=30))  # not expressible in RFC 3339
    assert format_timestamp(datetime(2025, 3, 1, 12, tzinfo=odd)) == "2025-03-01T11:42:30Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2025, 3, 1))


@pytest.mark.parametrize(
    "nonce",
    ["1234567", "1234567_", "abcd-efgh", "abcdefg ", " abcdefgh", "١٢٣٤٥٦٧٨", "", "abcdéfgh"],
)
def test_refuses_bad_nonce(nonce: str) -> None:
    with pytest.raises(SiweMalformedError):
        SiweMessage.parse(replace_line(GOOD, "Nonce: ", "Nonce: " + nonce))
    with pytest.raises(SiweMalformedError, match="nonce"):
        base_message(nonce=nonce)


@pytest.mark.parametrize("chain_id", ["0", "01", "-1", "1.0", "0x1", "", " 1", "1" * 79])
def test_refuses_bad_chain_id(chain_id: str) -> None:
    with pytest.raises(SiweMalformedError):
        SiweMessage.parse(replace_line(GOOD, "Chain ID: ", "Chain ID: " + chain_id))


def test_accepts_the_largest_chain_id() -> None:
    largest = (1 << 256) - 1
    message = base_message(chain_id=largest)
    assert SiweMessage.parse(message.to_text()).chain_id == largest
    for bad in (0, -1, 1 << 256, True, "1", 1.0):
        with pytest.raises(SiweMalformedError, match="chain_id"):
            base_message(chain_id=bad)


@pytest.mark.parametrize("version", ["2", "1.0", "", " 1", "01"])
def test_refuses_bad_version(version: str) -> None:
    with pytest.raises(SiweMalformedError):
        SiweMessage.parse(replace_line(GOOD, "Version: ", "Version: " + version))
    with pytest.raises(SiweMalformedError, match="version"):
        base_message(version=version)


@pytest.mark.parametrize("request_id", ["has space", "a#b", "a?b", "a/b", "%zz", "é"])
def test_refuses_bad_request_id(request_id: str) -> None:
    with pytest.raises(SiweMalformedError):
        SiweMessage.parse(replace_line(GOOD, "Request ID: ", "Request ID: " + request_id))


def test_empty_request_id_empty_statement_and_empty_resources_round_trip() -> None:
    text = base_message(request_id="", statement="", resources=()).to_text()
    assert "Request ID: \n" not in text  # the last line
    assert text.endswith("Request ID: ")
    assert "\n\n\n\nURI: " in text  # the empty statement line
    message = SiweMessage.parse(text)
    assert message.request_id == ""
    assert message.statement == ""
    empty_list = text + "\nResources:"
    parsed = SiweMessage.parse(empty_list)
    assert parsed.resources == ()
    assert parsed.to_text() == empty_list


def test_refuses_non_ascii_and_overlong_messages() -> None:
    with pytest.raises(SiweMalformedError, match="ASCII"):
        SiweMessage.parse(GOOD.replace("records", "récords"))
    padding = "x" * MAX_MESSAGE_LENGTH
    with pytest.raises(SiweMalformedError, match="longer"):
        SiweMessage.parse(replace_line(GOOD, "Request ID: ", "Request ID: " + padding))
    with pytest.raises(SiweMalformedError):
        SiweMessage.parse(b"bytes")  # type: ignore[arg-type]


def test_construction_validates_every_field() -> None:
    with pytest.raises(SiweMalformedError, match="issued_at"):
        base_message(issued_at=datetime(2025, 3, 1))
    with pytest.raises(SiweMalformedError, match="expiration_time"):
        base_message(expiration_time="2025-03-01T12:00:00Z")
    with pytest.raises(SiweMalformedError, match="resources"):
        base_message(resources=["https://a.example"])
    with pytest.raises(SiweMalformedError, match="resources"):
        base_message(resources=("not a uri",))
    with pytest.raises(SiweMalformedError, match="uri"):
        base_message(uri="/relative/only")
    with pytest.raises(SiweMalformedError, match="domain"):
        base_message(domain="")
    with pytest.raises(SiweMalformedError, match="statement"):
        base_message(statement="two\nlines")
    with pytest.raises(SiweMalformedError, match="request_id"):
        base_message(request_id="a b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        base_message().nonce = "changed1"  # type: ignore[misc]


def test_replace_forgets_the_original_spelling() -> None:
    text = replace_line(GOOD, "Issued At: ", "Issued At: 2025-03-01T11:59:30.000Z")
    message = SiweMessage.parse(text)
    assert message.to_text() == text
    assert dataclasses.replace(message).to_text() == GOOD
    later = dataclasses.replace(message, issued_at=NOW)
    assert "Issued At: 2025-03-01T12:00:00Z" in later.to_text()


# ----------------------------------------------------------------------------- errors, nonces


def test_error_hierarchy_codes_and_statuses() -> None:
    classes = [
        SiweMalformedError,
        SiweDomainError,
        SiweUriError,
        SiweChainIdError,
        SiweExpiredError,
        SiweNotYetValidError,
        SiweSignatureError,
        SiweNonceError,
    ]
    assert SiweError.code == "siwe-invalid"
    assert SiweError.status == 401
    assert issubclass(SiweError, LedgerError)
    codes = {cls.code for cls in classes}
    assert len(codes) == len(classes)
    assert "siwe-invalid" not in codes
    for cls in classes:
        assert issubclass(cls, SiweError)
        assert cls.code.startswith("siwe-")
        assert cls.status == (400 if cls is SiweMalformedError else 401)
    error = SiweNonceError("nonce already used", nonce="abcdefgh")
    assert error.diagnostics() == {
        "code": "siwe-nonce",
        "detail": "nonce already used",
        "nonce": "abcdefgh",
    }


def test_new_nonce() -> None:
    nonces = {new_nonce() for _ in range(200)}
    assert len(nonces) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9]{22}", n) for n in nonces)
    assert re.fullmatch(r"[A-Za-z0-9]{8}", SiweMessage.new_nonce(8))
    with pytest.raises(ValueError, match="at least 8"):
        new_nonce(7)


# ----------------------------------------------------------------------------- properties

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_STATEMENT_CHARS = _ALNUM + "-._~:/?#[]@!$&'()*+,;= "
_PCHARS = _ALNUM + "-._~!$&'()*+,;=:@"
_TIMEZONES = [
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(-timedelta(hours=8)),
    timezone(-timedelta(hours=23, minutes=59)),
    timezone(timedelta(hours=14)),
]

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
hosts = st.one_of(
    hostnames,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
domains = st.builds(
    lambda userinfo, host, port: f"{userinfo}{host}{port}",
    st.sampled_from(["", "patient@", "a:b@"]),
    hosts,
    st.one_of(st.just(""), st.integers(0, 65535).map(lambda p: f":{p}")),
)
paths = st.lists(st.text(_PCHARS, max_size=8), max_size=4).map(lambda parts: "/".join(parts))
uris = st.one_of(
    st.builds(
        lambda scheme, domain, path, query: f"{scheme}://{domain}/{path}{query}",
        st.sampled_from(["https", "http", "ipfs", "wss"]),
        domains,
        paths,
        st.one_of(st.just(""), st.text(_PCHARS + "/?", max_size=10).map(lambda q: "?" + q)),
    ),
    st.from_regex(
        r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", fullmatch=True
    ),
    st.binary(min_size=20, max_size=20).map(lambda a: f"did:pkh:eip155:1:{to_checksum_address(a)}"),
)
instants = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9000, 1, 1),
    timezones=st.sampled_from(_TIMEZONES),
)
messages = st.builds(
    SiweMessage,
    domain=domains,
    address=st.binary(min_size=20, max_size=20).map(to_checksum_address),
    statement=st.one_of(st.none(), st.text(_STATEMENT_CHARS, max_size=80)),
    uri=uris,
    chain_id=st.integers(1, (1 << 256) - 1),
    nonce=st.text(_ALNUM, min_size=8, max_size=32),
    issued_at=instants,
    expiration_time=st.one_of(st.none(), instants),
    not_before=st.one_of(st.none(), instants),
    request_id=st.one_of(st.none(), st.text(_PCHARS, max_size=20)),
    resources=st.lists(uris, max_size=4).map(tuple),
    scheme=st.one_of(st.none(), st.sampled_from(["https", "http", "app+dev.v1"])),
)


@FAST
@given(messages)
def test_round_trip_message_text_message(message: SiweMessage) -> None:
    text = message.to_text()
    parsed = SiweMessage.parse(text)
    assert parsed == message
    assert parsed.to_text() == text
    assert text.count("\n") >= 8  # header, address, 2 blanks, 5 mandatory fields
    assert text.split("\n")[0].endswith(HEADER_SUFFIX)


def _respell(value: datetime, style: int) -> str:
    canonical = format_timestamp(value)
    if style == 0:
        return canonical
    if style == 1:  # lower-case t and z
        return canonical.replace("T", "t").replace("Z", "z")
    if style == 2 and canonical.endswith("Z"):  # +00:00 instead of Z
        return canonical[:-1] + "+00:00"
    if style == 3 and "." not in canonical:  # a zero fraction
        return canonical[:19] + ".000" + canonical[19:]
    return canonical


@FAST
@given(messages, st.integers(0, 3), st.integers(0, 3))
def test_round_trip_text_message_text_keeps_the_original_spelling(
    message: SiweMessage, issued_style: int, expiry_style: int
) -> None:
    text = message.to_text()
    text = replace_line(
        text, "Issued At: ", "Issued At: " + _respell(message.issued_at, issued_style)
    )
    if message.expiration_time is not None:
        text = replace_line(
            text,
            "Expiration Time: ",
            "Expiration Time: " + _respell(message.expiration_time, expiry_style),
        )
    parsed = SiweMessage.parse(text)
    assert parsed == message
    assert parsed.to_text() == text


@settings(max_examples=30, deadline=None)
@given(messages.map(lambda m: dataclasses.replace(m, address=ACCOUNT.address)))
def test_any_valid_message_signed_by_its_address_verifies(message: SiweMessage) -> None:
    text = message.to_text()
    now = message.issued_at
    if message.not_before is not None and now < message.not_before:
        now = message.not_before
    if message.expiration_time is not None and now >= message.expiration_time:
        return  # never valid; covered by the refusal tests
    verify_siwe(
        text,
        sign(text),
        domain=message.domain,
        chain_id=message.chain_id,
        now=now,
        scheme=message.scheme or "https",
        clock_skew=timedelta(days=365 * 8000),
    )
