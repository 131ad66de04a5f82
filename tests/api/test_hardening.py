"""Issue 12: what an attacker or a careless operator tried against the API fails safely, on
both stores.

One running API per store (SQLite, and PostgreSQL when ``MEDTRAIL_TEST_POSTGRES_URL`` is set);
tests create fresh objects for what they change.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Credentials
from api.ratelimit import TokenBuckets
from ledger.events import Purpose
from ledger.siwe import SiweMessage
from ledger.text import UnsafeText
from tests.api.world import World, bearer, open_world, personal_sign, siwe_text

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


# --------------------------------------------------------------------------- item 10: sign-in


@pytest.fixture(scope="module")
def stopped_clock_app(world: World) -> FastAPI:
    """The world's API with the rate limits' clock stopped: buckets never refill."""
    return create_app(world.ledger, clock=lambda: 1000.0)


def client_at(world: World, address: str, app: FastAPI | None = None) -> TestClient:
    """A client of the world's API from its own address (rate limits are per address)."""
    return TestClient(app or world.app, client=(address, 40000))


def sign_in_text(client: TestClient, account: Any, uri: str | None = None) -> str:
    info = client.get("/v1/auth/nonce").json()
    return SiweMessage(
        domain=info["domain"],
        address=account.address,
        statement="Sign in to medtrail.",
        uri=uri if uri is not None else f"http://{info['domain']}",
        chain_id=info["chainId"],
        nonce=info["nonce"],
        issued_at=datetime.now(UTC),
    ).to_text()


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("https://evil.example/login", id="another-origin"),
        pytest.param("http://{domain}@evil.example/", id="userinfo-trick"),
        pytest.param("https://{domain}", id="another-scheme"),
        pytest.param("http://{domain}1", id="longer-port"),
        pytest.param("urn:medtrail:{domain}", id="not-a-url"),
    ],
)
def test_a_sign_in_for_another_origin_is_refused(world: World, uri: str) -> None:
    client = client_at(world, "10.0.10.1")
    account = Account.create()
    domain = world.ledger.settings.siwe_domain
    text = sign_in_text(client, account, uri.format(domain=domain))
    answer = client.post(
        "/v1/auth/siwe", json={"message": text, "signature": personal_sign(account, text)}
    )
    assert problem(answer, 401, "siwe-uri")["detail"]


@pytest.mark.parametrize("path", ["", "/", "/consent?lang=en"])
def test_a_sign_in_for_this_origin_is_accepted(world: World, path: str) -> None:
    client = client_at(world, "10.0.10.2")
    account = Account.create()
    text = sign_in_text(client, account, f"http://{world.ledger.settings.siwe_domain}{path}")
    answer = client.post(
        "/v1/auth/siwe", json={"message": text, "signature": personal_sign(account, text)}
    )
    assert answer.status_code == 200, answer.text


def assert_rate_limited(answer: httpx.Response) -> None:
    problem(answer, 429, "rate-limited")
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.json()["retryAfter"] == int(answer.headers["retry-after"])


def test_nonces_are_rate_limited_per_client_address(
    world: World, stopped_clock_app: FastAPI
) -> None:
    flooding = client_at(world, "10.0.20.1", stopped_clock_app)
    other = client_at(world, "10.0.20.2", stopped_clock_app)
    burst = world.ledger.settings.auth_burst
    for _ in range(burst):
        assert flooding.get("/v1/auth/nonce").status_code == 200
    assert_rate_limited(flooding.get("/v1/auth/nonce"))
    assert other.get("/v1/auth/nonce").status_code == 200  # another address is not held


def test_failed_sign_ins_are_rate_limited(world: World, stopped_clock_app: FastAPI) -> None:
    """The issue's attack: 200 failed sign-ins in 3.7 s. Now the burst fails, then 429."""
    client = client_at(world, "10.0.30.1", stopped_clock_app)
    nonces = client_at(world, "10.0.30.9")
    account, impostor = Account.create(), Account.create()
    burst = world.ledger.settings.auth_burst
    statuses: list[int] = []
    for attempt in range(burst + 5):
        text = sign_in_text(nonces, account) if attempt < burst else "x"
        answer = client.post(
            "/v1/auth/siwe", json={"message": text, "signature": personal_sign(impostor, text)}
        )
        statuses.append(answer.status_code)
    assert set(statuses[:burst]) == {401}
    assert statuses[burst:] == [429] * 5
    # Even a correct sign-in waits now: the address is out of attempts.
    text = sign_in_text(client_at(world, "10.0.30.2"), account)
    assert_rate_limited(
        client.post(
            "/v1/auth/siwe", json={"message": text, "signature": personal_sign(account, text)}
        )
    )


def test_failed_authentications_are_rate_limited(world: World, stopped_clock_app: FastAPI) -> None:
    client = client_at(world, "10.0.40.1", stopped_clock_app)
    forged = {"Authorization": "Bearer mtk_0123456789abcdef." + "A" * 43}
    for _ in range(world.ledger.settings.auth_burst):
        problem(client.get("/v1/auth/whoami", headers=forged), 401, "unauthenticated")
    assert_rate_limited(client.get("/v1/auth/whoami", headers=forged))
    assert_rate_limited(client.get("/v1/auth/whoami", headers=world.headers("regulator")))
    # Requests without credentials guess nothing: they are not held.
    assert client.get("/healthz").status_code == 200
    problem(client.get("/v1/auth/whoami"), 401, "unauthenticated")
    # Successes cost nothing.
    fresh = client_at(world, "10.0.40.2", stopped_clock_app)
    for _ in range(world.ledger.settings.auth_burst + 5):
        assert fresh.get("/v1/auth/whoami", headers=world.headers("regulator")).status_code == 200


def test_rate_limits_refill_over_time() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=0.5, burst=2, clock=lambda: now[0])
    assert buckets.take("a") == 0
    assert buckets.take("a") == 0
    assert buckets.take("a") == pytest.approx(2.0)
    now[0] = 2.0
    assert buckets.take("a") == 0
    buckets.charge("b")
    buckets.charge("b")
    buckets.charge("b")
    assert buckets.wait("b") == pytest.approx(4.0)


def test_answers_carrying_a_credential_are_never_cached(world: World) -> None:
    client = client_at(world, "10.0.50.1")
    account = Account.create()
    nonce = client.get("/v1/auth/nonce")
    assert nonce.headers["cache-control"] == "no-store"
    text = sign_in_text(client, account)
    session = client.post(
        "/v1/auth/siwe", json={"message": text, "signature": personal_sign(account, text)}
    )
    assert session.status_code == 200
    assert session.headers["cache-control"] == "no-store"
    key = client.post(
        "/v1/api-keys",
        json={"role": "regulator", "label": "no-store check"},
        headers=world.headers("regulator"),
    )
    assert key.status_code == 201
    assert key.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/healthz"), ("GET", "/v1/nowhere"), ("GET", "/v1/auth/whoami"), ("GET", "/docs")],
)
def test_every_answer_forbids_content_sniffing(world: World, method: str, path: str) -> None:
    answer = client_at(world, "10.0.60.1").request(method, path)
    assert answer.headers["x-content-type-options"] == "nosniff"


# --------------------------------------------------------------------------- item 10: decisions


@pytest.fixture(scope="module")
def decision(world: World) -> dict[str, Any]:
    """A question about record_a (custodian A, patient P) released to B, which holds a grant."""
    return {
        "grantee": world.b.address,
        "patient": world.p.address,
        "recordRef": "0x" + world.record_a.hex(),
        "purpose": int(Purpose.TREATMENT),
        "at": world.ledger.chain.latest_timestamp(),  # the grant's times are chain times
    }


def ask(world: World, question: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    answer: httpx.Response = world.client.post(
        "/v1/access-decisions", json=question, headers=headers
    )
    return answer


@pytest.mark.parametrize("role", ["regulator", "patient_p", "institution_a", "institution_b"])
def test_the_parties_of_a_question_may_ask_it(
    world: World, decision: dict[str, Any], role: str
) -> None:
    """Regulators, the patient, the record's custodian (A) and the grantee (B)."""
    answer = ask(world, decision, world.headers(role))
    assert answer.status_code == 200, answer.text
    assert answer.json()["permit"] is True


def test_another_institution_may_not_ask(world: World, decision: dict[str, Any]) -> None:
    stranger = world.new_institution()
    headers = bearer(world.keys_of(stranger))
    body = problem(ask(world, decision, headers), 403, "forbidden")
    assert world.b.address not in body["detail"]
    # Naming a record it does not hold, or one unknown to the log, changes nothing.
    unknown = {**decision, "recordRef": "0x" + stranger.record("mrn-x").hex()}
    problem(ask(world, unknown, headers), 403, "forbidden")


def test_a_custodian_asks_only_about_its_records_own_patient(
    world: World, decision: dict[str, Any]
) -> None:
    """A holds record_a of P: it may not learn Q's consent by naming its own record."""
    other_patient = {**decision, "patient": world.q.address}
    problem(ask(world, other_patient, world.headers("institution_a")), 403, "forbidden")


def test_a_grantee_asks_only_about_releases_to_itself(
    world: World, decision: dict[str, Any]
) -> None:
    """B may not learn whether P consented to A (or to anyone else) for a record B does not
    hold."""
    to_other = {**decision, "grantee": world.new_institution().address}
    problem(ask(world, to_other, world.headers("institution_b")), 403, "forbidden")


def test_a_patient_asks_only_about_themself(world: World, decision: dict[str, Any]) -> None:
    problem(ask(world, decision, world.headers("patient_q")), 403, "forbidden")
