"""Issue 12: what an attacker or a careless operator tried against the API fails safely, on
both stores.

One running API per store (SQLite, and PostgreSQL when ``MEDTRAIL_TEST_POSTGRES_URL`` is set);
tests create fresh objects for what they change.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account

from api.auth import Credentials
from ledger.text import UnsafeText
from tests.api.world import World, open_world, personal_sign, siwe_text

STORES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="module", params=STORES)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    with open_world(tmp_path_factory.mktemp(f"world-{request.param}"), request.param) as built:
        yield built


def problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["code"] == code, body
    return body


# --------------------------------------------------------------------------- item 8: text

UNSAFE_TEXT = [
    pytest.param("evil\u0000key", id="nul"),
    pytest.param("two\nlines", id="newline"),
    pytest.param("\u001b[2Jcleared", id="escape"),
    pytest.param("gpj.\u202eexe", id="bidi-override"),
    pytest.param("\u0085next", id="c1-control"),
]


@pytest.mark.parametrize("label", UNSAFE_TEXT)
def test_an_api_key_label_with_control_characters_is_refused(world: World, label: str) -> None:
    before = len(world.credentials().list_keys())
    answer = world.client.post(
        "/v1/api-keys",
        json={"role": "regulator", "label": label},
        headers=world.headers("regulator"),
    )
    body = problem(answer, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["body", "label"]
    assert "printable" in body["errors"][0]["detail"]
    assert len(world.credentials().list_keys()) == before


def test_a_lone_surrogate_is_refused(world: World) -> None:
    """A ``\\ud800`` escape is valid JSON text and decodes to a string no store can encode
    (sent as raw bytes: a JSON library would not encode the lone surrogate)."""
    answer = world.client.post(
        "/v1/api-keys",
        content=b'{"role": "regulator", "label": "a\\ud800b"}',
        headers={**world.headers("regulator"), "Content-Type": "application/json"},
    )
    assert problem(answer, 422, "validation-error")["errors"][0]["loc"] == ["body", "label"]


@pytest.mark.parametrize("name", UNSAFE_TEXT)
def test_an_institution_name_with_control_characters_never_reaches_the_chain(
    world: World, name: str
) -> None:
    address = Account.create().address
    answer = world.client.post(
        "/v1/institutions",
        json={"address": address, "kind": "hospital", "name": name},
        headers=world.headers("regulator"),
    )
    problem(answer, 422, "validation-error")
    assert not world.ledger.institution(address).registered


def test_a_printable_name_in_any_script_is_accepted(world: World) -> None:
    address = Account.create().address
    answer = world.client.post(
        "/v1/institutions",
        json={"address": address, "kind": "pharmacy", "name": "北京协和医院 - Pharmacie Élysée"},
        headers=world.headers("regulator"),
    )
    assert answer.status_code == 201, answer.text


def test_credentials_refuse_unsafe_labels_on_every_store(world: World) -> None:
    """The store-level guard (``medtrail api-key create`` writes there directly)."""
    with pytest.raises(UnsafeText) as refused:
        Credentials(world.ledger.store).issue_key("regulator", None, "ops\u0000")
    assert refused.value.status == 422
    assert "U+0000" in refused.value.detail


def test_the_cli_refuses_an_unsafe_label_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.cli import main

    monkeypatch.setenv("MEDTRAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setattr(sys, "argv", ["medtrail", "api-key", "create", "--label", "a\u001b[2J"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: label must be one line of printable text (it holds U+001B)")
    assert "Traceback" not in err


def test_a_sign_in_message_with_nul_is_refused(world: World) -> None:
    account = Account.create()
    text = siwe_text(world.client, account).replace("Sign in to medtrail.", "Sign in\u0000")
    answer = world.client.post(
        "/v1/auth/siwe", json={"message": text, "signature": personal_sign(account, text)}
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


# --------------------------------------------------------------------------- item 6: secrets


@pytest.fixture
def refusing_key_inserts(world: World) -> Iterator[None]:
    """A store that fails every insert of an API key (a forced database error)."""
    store = world.ledger.store
    with store.write() as connection:
        if store.is_sqlite:
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_keys BEFORE INSERT ON api_keys "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse_keys() RETURNS trigger AS "
                "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_keys BEFORE INSERT ON api_keys "
                "FOR EACH ROW EXECUTE FUNCTION refuse_keys()"
            )
    try:
        yield
    finally:
        with store.write() as connection:
            if store.is_sqlite:
                connection.exec_driver_sql("DROP TRIGGER refuse_keys")
            else:
                connection.exec_driver_sql("DROP TRIGGER refuse_keys ON api_keys")
                connection.exec_driver_sql("DROP FUNCTION refuse_keys()")


@pytest.mark.usefixtures("refusing_key_inserts")
def test_a_database_error_is_logged_without_the_statements_parameters(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The 500's logged traceback once carried the INSERT's parameters: the new key's hash,
    its id and label."""
    label = "label-that-must-not-be-logged"
    with caplog.at_level(logging.ERROR):
        answer = world.client.post(
            "/v1/api-keys",
            json={"role": "regulator", "label": label},
            headers=world.headers("regulator"),
        )
    body = problem(answer, 500, "internal-error")
    assert "refused by the test" not in body["detail"]
    logged = caplog.text
    assert "refused by the test" in logged  # the traceback was logged...
    assert "SQL parameters hidden" in logged  # ...without the statement's parameters
    assert label not in logged
    assert "mtk_" not in logged
