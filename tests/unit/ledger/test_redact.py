"""Secret fragments of URLs and keys never survive a :class:`~ledger.redact.Redactor`."""

from __future__ import annotations

import logging
import sys

import pytest
from pydantic import SecretStr

from ledger.errors import LedgerError
from ledger.redact import REDACTED, RedactingFormatter, Redactor, redact_error, url_origin


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://mainnet.example/v3/0123456789abcdef", "https://mainnet.example:443"),
        ("http://user:pw@127.0.0.1:8545/?key=1", "http://127.0.0.1:8545"),
        ("HTTP://[::1]:8545/path", "http://[::1]:8545"),
        ("wss://node.example/ws/KEY", "wss://node.example:443"),
        ("not a url", REDACTED),
    ],
)
def test_an_origin_is_scheme_host_and_port_only(url: str, origin: str) -> None:
    assert url_origin(url) == origin


def test_every_part_of_a_secret_url_is_redacted_wherever_it_appears() -> None:
    url = "https://alice:s%3Acret@node.example:8545/v3/KEYKEYKEY?apikey=QQQQ&x=1"
    redactor = Redactor.of(urls=[url])
    text = (
        f"the chain at {url} is unreachable: HTTPSConnectionPool(host='node.example', "
        "port=8545): Max retries exceeded with url: /v3/KEYKEYKEY?apikey=QQQQ&x=1; "
        "auth alice:s:cret; path /v3/KEYKEYKEY; query apikey=QQQQ"
    )
    cleaned = redactor.text(text)
    assert "https://node.example:8545 is unreachable" in cleaned
    for secret in ("KEYKEYKEY", "QQQQ", "alice", "s%3Acret", "s:cret"):
        assert secret not in cleaned, cleaned


def test_keys_are_redacted_in_every_hex_spelling() -> None:
    key = "0x" + "Ab" * 32
    redactor = Redactor.of(keys=[SecretStr(key), None])
    for spelling in (key, key[2:], key[2:].lower()):
        assert redactor.text(f"key {spelling}!") == f"key {REDACTED}!"


def test_values_and_errors_are_redacted_in_place() -> None:
    redactor = Redactor.of(urls=["http://h:1/SECRET-PATH"])
    value = {"url": "http://h:1/SECRET-PATH", "seen": ["/SECRET-PATH"], "n": 3}
    assert redactor.value(value) == {"url": "http://h:1", "seen": [REDACTED], "n": 3}
    error = LedgerError("at http://h:1/SECRET-PATH", url="http://h:1/SECRET-PATH")
    assert redact_error(error, redactor) is error
    assert error.detail == "at http://h:1"
    assert str(error) == "at http://h:1"
    assert error.context == {"url": "http://h:1"}


def test_log_lines_and_tracebacks_are_redacted() -> None:
    formatter = RedactingFormatter(Redactor.of(urls=["http://h:1/SECRET-PATH"]), "%(message)s")
    try:
        raise RuntimeError("failed at /SECRET-PATH")
    except RuntimeError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "to %s", ("/SECRET-PATH",), sys.exc_info()
        )
    line = formatter.format(record)
    assert "SECRET" not in line
    assert "RuntimeError" in line
