"""Every kind of error answers an RFC 9457 problem with its stable type, and the right status.

Client mistakes are 4xx, never 500; the chain or the store being down is 503; an unexpected
exception is a 500 that leaks nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import api.problems
from api.app import create_app
from api.problems import MAX_PROBLEM_ITEMS, catalogue
from ledger.chain.tx import ChainError
from ledger.events import Action, InstitutionKind
from ledger.store.db import StoreError
from tests.api.world import (
    World,
    bearer,
    event_json,
    fresh_account,
    later,
    personal_sign,
    sign_in,
    siwe_text,
)
from tests.support.actors import Patient


def h(value: bytes) -> str:
    return "0x" + value.hex()


def problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check the answer is the problem ``code`` with ``status``; return its body."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["code"] == code, body
    assert body["type"] == f"/problems/{code}"
    assert body["status"] == status
    assert body["instance"] == answer.request.url.path
    assert body["title"]
    assert body["detail"]
    return body


def access_by(world: World, inst: Any, **kw: Any) -> Any:
    fields = {"occurredAt": world.ledger.chain.latest_timestamp(), **kw}
    return inst.sign(
        inst.access(inst.record(f"mrn-{time.monotonic_ns()}"), world.p.address, **fields)
    )


def submit(world: World, role_or_key: str, *events: Any, raw: Any = None) -> httpx.Response:
    headers = world.headers(role_or_key) if role_or_key in world.keys else bearer(role_or_key)
    body = raw if raw is not None else {"events": [event_json(e) for e in events]}
    answer: httpx.Response = world.client.post("/v1/events", json=body, headers=headers)
    return answer


# --------------------------------------------------------------------------- validation


def test_an_unknown_field_is_refused(world: World) -> None:
    event = event_json(access_by(world, world.a))
    body = problem(
        submit(world, "institution_a", raw={"events": [event], "extra": 1}),
        422,
        "validation-error",
    )
    assert body["errors"] == [
        {
            "loc": ["body", "extra"],
            "code": "extra_forbidden",
            "detail": "Extra inputs are not permitted",
        }
    ]


def test_a_malformed_event_is_refused_with_its_index(world: World) -> None:
    good = event_json(access_by(world, world.a))
    bad = event_json(access_by(world, world.a))
    bad["event"]["recordRef"] = "0x1234"
    bad["event"]["surprise"] = True
    body = problem(
        submit(world, "institution_a", raw={"events": [good, bad]}), 422, "validation-error"
    )
    assert {e["index"] for e in body["errors"]} == {1}
    locs = {tuple(e["loc"][-1:]) for e in body["errors"]}
    assert locs == {("recordRef",), ("surprise",)}
    assert "input" not in body["errors"][0]  # inputs are not echoed back


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        (
            "POST",
            "/v1/events",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
        ),
        ("POST", "/v1/events", {"content": b"events", "headers": {"content-type": "text/plain"}}),
        ("POST", "/v1/events", {}),
        ("POST", "/v1/events", {"json": {"events": []}}),
        (
            "POST",
            "/v1/events",
            {"json": {"events": [{"type": "Nope", "event": {}, "signature": "0x"}]}},
        ),
        ("GET", "/v1/events/0x1234", {}),
        ("GET", "/v1/log/entries?limit=5000", {}),
        ("GET", "/v1/log/entries?start=-1", {}),
        ("GET", "/v1/log/consistency?from=x&to=1", {}),
        ("GET", "/v1/patients/0xnotanaddress/grants", {}),
        ("GET", "/v1/grants/0", {}),
        ("POST", "/v1/api-keys", {"json": {"role": "institution", "label": "no address"}}),
        (
            "POST",
            "/v1/institutions",
            {"json": {"address": "0x" + "11" * 20, "kind": "none", "name": "x"}},
        ),
        (
            "POST",
            "/v1/institutions",
            {"json": {"address": "0x" + "11" * 20, "kind": "hospital", "name": "医" * 22}},
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_requests_that_do_not_match_the_schema_are_422(
    world: World, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    headers = {**world.headers("regulator"), **kwargs.pop("headers", {})}
    if path == "/v1/events":
        headers.update(world.headers("institution_a"))
    answer = world.client.request(method, path, headers=headers, **kwargs)
    body = problem(answer, 422, "validation-error")
    assert body["errors"]
    assert all({"loc", "code", "detail"} <= set(e) for e in body["errors"])


# --------------------------------------------------------------------------- batches


def test_events_of_another_institution_are_refused_with_their_indexes(world: World) -> None:
    own, foreign = access_by(world, world.a), access_by(world, world.b)
    body = problem(submit(world, "institution_a", own, foreign, own), 403, "foreign-event")
    assert [e["index"] for e in body["errors"]] == [1]
    assert (
        world.client.get(
            f"/v1/events/{h(own.event_id)}", headers=world.headers("regulator")
        ).status_code
        == 404
    )


def test_a_batch_refused_for_one_reason_carries_that_reason_s_status(world: World) -> None:
    stranger = world.env.institution("Stranger", InstitutionKind.HOSPITAL, register=False)
    key = world.credentials().issue_key("institution", stranger.address, "stranger")[1]
    body = problem(submit(world, key, access_by(world, stranger)), 403, "batch-rejected")
    assert [(e["index"], e["code"]) for e in body["errors"]] == [(0, "institution-unregistered")]


def test_a_batch_is_all_or_nothing_and_lists_every_refusal(world: World) -> None:
    a = world.a
    size = world.ledger.log.head().size
    ok = access_by(world, a)
    future = access_by(world, a, occurredAt=int(time.time()) + 86400)
    rx = a.prescription(a.record("mrn-x"), world.p.address)
    unknown_fill = world.env.pharmacy.dispense(rx)  # its prescription is not in the log
    no_reason = a.sign(
        a.access(
            a.record("mrn-y"),
            world.p.address,
            custodian=world.b.address,
            occurredAt=ok.event.occurredAt,
        )
    )
    answer = submit(world, "institution_a", ok, future, no_reason)
    body = problem(answer, 422, "batch-rejected")
    assert [(e["index"], e["code"]) for e in body["errors"]] == [
        (1, "occurred-in-future"),
        (2, "reason-required"),
    ]
    assert unknown_fill.prescriptionId == rx.eventId
    # Nothing of the batch was stored: the good event is unknown, the log did not grow.
    assert (
        world.client.get(
            f"/v1/events/{h(ok.event_id)}", headers=world.headers("regulator")
        ).status_code
        == 404
    )
    world.ledger.log.integrate_all()
    assert world.ledger.log.head().size == size


def test_a_dispense_of_an_unknown_prescription_is_refused(world: World) -> None:
    pharmacy = world.env.pharmacy
    rx = world.a.prescription(world.a.record("mrn-z"), world.p.address)
    key = world.keys_of(pharmacy)
    # The pharmacy may not see the hospital's prescriptions: it is not told whether one exists.
    body = problem(submit(world, key, pharmacy.sign(pharmacy.dispense(rx))), 409, "batch-rejected")
    assert [e["code"] for e in body["errors"]] == ["log-conflict"]


def test_an_event_id_reused_with_other_content_is_a_conflict(world: World) -> None:
    first = access_by(world, world.a)
    assert submit(world, "institution_a", first).status_code == 200
    other = world.a.sign(first.event.model_copy(update={"action": Action.WRITE}))
    body = problem(submit(world, "institution_a", other), 409, "batch-rejected")
    assert body["errors"][0]["code"] == "event-id-conflict"


def test_a_batch_over_the_limit_is_413(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(world.ledger.ingestor, "max_batch", 2)
    events = [access_by(world, world.a) for _ in range(3)]
    body = problem(submit(world, "institution_a", *events), 413, "batch-too-large")
    assert body["limit"] == 2


@pytest.mark.parametrize("count", [3, 300_000])
def test_too_many_events_are_413_before_any_is_validated(
    world: World, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    # Malformed events past the limit: refused for their number, not listed one by one
    # (300,000 of them took ~1 s of a turn and a 422 naming each).
    monkeypatch.setattr(world.ledger.ingestor, "max_batch", 2)
    answer = world.client.post(
        "/v1/events",
        content=b'{"events": [' + b",".join([b"0"] * count) + b"]}",
        headers=bearer(world.keys["institution_a"]),
    )
    body = problem(answer, 413, "batch-too-large")
    assert body["limit"] == 2
    assert str(count) in body["detail"]
    assert "errors" not in body


def test_malformed_events_within_the_limit_are_each_named(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(world.ledger.ingestor, "max_batch", 2)
    answer = world.client.post(
        "/v1/events",
        content=b'{"events": [0, 0]}',
        headers=bearer(world.keys["institution_a"]),
    )
    body = problem(answer, 422, "validation-error")
    assert [error["index"] for error in body["errors"]] == [0, 1]


def test_a_schema_error_lists_its_first_items_and_counts_them_all(world: World) -> None:
    # 100 events, each missing every field and with a bad signature: a dozen items each.
    events = b",".join([b'{"type": "RecordAccess", "event": {}, "signature": "0x"}'] * 100)
    answer = world.client.post(
        "/v1/events",
        content=b'{"events": [' + events + b"]}",
        headers=bearer(world.keys["institution_a"]),
    )
    body = problem(answer, 422, "validation-error")
    assert len(body["errors"]) == MAX_PROBLEM_ITEMS
    assert body["errorsTotal"] > MAX_PROBLEM_ITEMS
    assert body["errorsTotal"] % 100 == 0  # the same errors in each event
    per_event = body["errorsTotal"] // 100
    kept = [e["index"] for e in body["errors"]]
    assert kept == sorted(kept)  # the first ones, in order
    assert kept[0] == 0
    assert kept[-1] == (MAX_PROBLEM_ITEMS - 1) // per_event
    assert f"and {body['errorsTotal'] - 3} more" in body["detail"]


def test_a_refused_batch_lists_its_first_refusals_and_counts_them_all(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.problems, "MAX_PROBLEM_ITEMS", 2)
    future = int(time.time()) + 86400
    events = [access_by(world, world.a, occurredAt=future + n) for n in range(3)]
    body = problem(submit(world, "institution_a", *events), 422, "batch-rejected")
    assert [(e["index"], e["code"]) for e in body["errors"]] == [
        (0, "occurred-in-future"),
        (1, "occurred-in-future"),
    ]
    assert body["errorsTotal"] == 3


def test_a_problem_within_the_cap_has_no_total(world: World) -> None:
    future = int(time.time()) + 86400
    body = problem(
        submit(world, "institution_a", access_by(world, world.a, occurredAt=future)),
        422,
        "batch-rejected",
    )
    assert len(body["errors"]) == 1
    assert "errorsTotal" not in body


@pytest.fixture
def small_client(world: World) -> Iterator[TestClient]:
    return TestClient(create_app(world.ledger, max_body_bytes=1024))


def test_a_declared_body_over_the_limit_is_413_unread(
    world: World, small_client: TestClient
) -> None:
    events = [event_json(access_by(world, world.a)) for _ in range(3)]
    answer = small_client.post(
        "/v1/events", json={"events": events}, headers=world.headers("institution_a")
    )
    assert problem(answer, 413, "request-too-large")["limit"] == 1024


def test_a_streamed_body_over_the_limit_is_413(world: World, small_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"events": ['
        for _ in range(100):
            yield b" " * 100
        yield b"]}"

    answer = small_client.post(
        "/v1/events",
        content=chunks(),
        headers={**world.headers("institution_a"), "content-type": "application/json"},
    )
    assert "content-length" not in answer.request.headers
    problem(answer, 413, "request-too-large")


# --------------------------------------------------------------------------- routing, auth


def test_unknown_routes_and_methods(world: World) -> None:
    problem(world.client.get("/v2/events"), 404, "not-found")
    answer = world.client.put("/v1/log/head")
    problem(answer, 405, "method-not-allowed")
    assert answer.headers["allow"] == "GET"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer nonsense",
        "Bearer mtk_0123456789abcdef." + "A" * 43,
    ],
)
def test_a_missing_or_unknown_credential_is_401(world: World, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = world.client.get("/v1/auth/whoami", headers=headers)
    problem(answer, 401, "unauthenticated")
    assert answer.headers["www-authenticate"] == "Bearer"


def test_a_revoked_key_and_an_ended_session_are_401(world: World) -> None:
    info, token = world.credentials().issue_key("regulator", None, "short-lived")
    assert world.client.get("/v1/auth/whoami", headers=bearer(token)).status_code == 200
    world.credentials().revoke_key(info.key_id)
    assert (
        "revoked"
        in problem(
            world.client.get("/v1/auth/whoami", headers=bearer(token)), 401, "unauthenticated"
        )["detail"]
    )

    session = sign_in(world.client, world.q.account)
    assert world.client.post("/v1/auth/logout", headers=bearer(session)).status_code == 204
    problem(world.client.get("/v1/auth/whoami", headers=bearer(session)), 401, "unauthenticated")

    expired, _ = world.credentials().open_session(world.q.address, int(time.time()) - 1)
    assert (
        "expired"
        in problem(
            world.client.get("/v1/auth/whoami", headers=bearer(expired)), 401, "unauthenticated"
        )["detail"]
    )


def test_a_role_that_may_not_is_403(world: World) -> None:
    body = problem(
        world.client.post(
            "/v1/events",
            json={"events": [event_json(access_by(world, world.a))]},
            headers=world.headers("regulator"),
        ),
        403,
        "forbidden",
    )
    assert body["role"] == "regulator"


# --------------------------------------------------------------------------- the log


@pytest.mark.parametrize(
    "path",
    [
        "/v1/log/consistency?from=1&to=999999",
        "/v1/log/consistency?from=3&to=2",
        "/v1/log/inclusion?leafIndex=99999&treeSize=3",
        "/v1/log/inclusion?leafIndex=0&treeSize=999999",
    ],
)
def test_proofs_outside_the_tree_are_400(world: World, path: str) -> None:
    problem(world.client.get(path), 400, "tree-size-out-of-range")


def test_unknown_objects_are_404(world: World) -> None:
    regulator = world.headers("regulator")
    unknown = h(bytes([7]) * 32)
    problem(world.client.get(f"/v1/events/{unknown}", headers=regulator), 404, "not-found")
    problem(
        world.client.get(f"/v1/records/{unknown}/trail", headers=regulator),
        404,
        "not-found",
    )
    problem(world.client.get("/v1/grants/999999", headers=regulator), 404, "not-found")
    problem(
        world.client.get(f"/v1/institutions/{Patient().address}", headers=regulator),
        404,
        "not-found",
    )
    problem(
        world.client.delete("/v1/api-keys/0123456789abcdef", headers=regulator), 404, "not-found"
    )
    problem(world.client.get("/problems/no-such-problem"), 404, "not-found")


# --------------------------------------------------------------------------- the chain


def test_a_grant_to_an_unregistered_grantee_is_409_with_the_contract_error(world: World) -> None:
    session = world.keys["patient_p"]
    body = world.grant_body(world.p, Patient().address, world.record_a)
    answer = world.client.post("/v1/grants", json=body, headers=bearer(session))
    refused = problem(answer, 409, "contract-reverted")
    assert refused["error"] == "GranteeNotActive"


def test_an_expired_grant_signature_is_422(world: World) -> None:
    now = world.ledger.chain.latest_timestamp()
    body = world.grant_body(world.p, world.b.address, world.record_a, deadline=now - 1)
    answer = world.client.post("/v1/grants", json=body, headers=world.headers("patient_p"))
    assert problem(answer, 422, "contract-reverted")["error"] == "SignatureExpired"


@pytest.mark.parametrize(
    ("window", "error"),
    [
        ((0, 0), "InvalidValidityWindow"),  # notBefore == expiresAt: an empty window
        ((1, 0), "InvalidValidityWindow"),
        ((-7200, -3600), "GrantAlreadyExpired"),
    ],
)
def test_a_grant_the_contract_would_refuse_is_answered_as_the_chain_would_without_relaying(
    world: World, window: tuple[int, int], error: str
) -> None:
    now = world.ledger.chain.latest_timestamp()
    not_before, expires_at = now + 3600 + window[0], now + 3600 + window[1]
    body = world.grant_body(
        world.p, world.b.address, world.record_a, not_before=not_before, expires_at=expires_at
    )
    nonce = world.ledger.chain.consent_nonce(world.p.address)
    answer = world.client.post("/v1/grants", json=body, headers=world.headers("patient_p"))
    refused = problem(answer, 422, "contract-reverted")
    expected_args = [not_before, expires_at] if error == "InvalidValidityWindow" else [expires_at]
    assert (refused["error"], refused["args"]) == (error, expected_args)
    assert refused["detail"].startswith(
        f"not relayed: the ConsentRegistry would revert with {error}"
    )
    assert world.ledger.chain.consent_nonce(world.p.address) == nonce


def test_a_grant_signed_by_someone_else_is_422(world: World) -> None:
    body = world.grant_body(world.q, world.b.address, world.record_a)
    body["patient"] = world.p.address
    answer = world.client.post("/v1/grants", json=body, headers=world.headers("patient_p"))
    refused = problem(answer, 422, "contract-reverted")
    assert refused["error"] == "InvalidSignature"
    assert refused["args"] == [world.p.address]


def test_a_patient_relays_only_their_own_grants(world: World) -> None:
    body = world.grant_body(world.q, world.b.address, world.record_b)
    problem(
        world.client.post("/v1/grants", json=body, headers=world.headers("patient_p")),
        403,
        "forbidden",
    )


def test_revoking_twice_is_409(world: World) -> None:
    grant = world.relay_grant(world.p, world.b.address, world.record_a)
    url = f"/v1/grants/{grant}/revoke"
    headers = world.headers("patient_p")
    assert world.client.post(url, json=world.revoke_body(world.p, grant), headers=headers).json()[
        "revoked"
    ]
    again = world.client.post(url, json=world.revoke_body(world.p, grant), headers=headers)
    assert problem(again, 409, "contract-reverted")["error"] == "GrantAlreadyRevoked"


def test_registering_twice_and_reinstating_an_active_institution_are_409(world: World) -> None:
    regulator = world.headers("regulator")
    body = {"address": world.a.address, "kind": "hospital", "name": "Again"}
    answer = world.client.post("/v1/institutions", json=body, headers=regulator)
    assert problem(answer, 409, "contract-reverted")["error"] == "InstitutionAlreadyRegistered"
    answer = world.client.post(f"/v1/institutions/{world.a.address}/reinstate", headers=regulator)
    assert problem(answer, 409, "contract-reverted")["error"] == "InstitutionNotSuspended"
    answer = world.client.post(f"/v1/institutions/{Patient().address}/suspend", headers=regulator)
    assert problem(answer, 404, "contract-reverted")["error"] == "InstitutionNotRegistered"


def test_a_key_for_an_unregistered_institution_is_409(world: World) -> None:
    body = {"role": "institution", "institution": Patient().address, "label": "nobody"}
    answer = world.client.post("/v1/api-keys", json=body, headers=world.headers("regulator"))
    problem(answer, 409, "institution-unknown")


def test_an_unreachable_chain_is_503(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_args: Any) -> Any:
        raise ChainError("reading grant 1 failed: connection refused")

    monkeypatch.setattr(world.ledger.chain, "grant", down)
    monkeypatch.setattr(world.ledger.chain, "block_number", down)
    answer = world.client.get(f"/v1/grants/{world.grant_p}", headers=world.headers("regulator"))
    problem(answer, 503, "chain-unavailable")
    ready = problem(world.client.get("/readyz"), 503, "not-ready")
    assert ready["checks"]["store"] == "ok"
    assert ready["checks"]["chain"].startswith("unreachable")


def test_an_unreachable_store_is_503(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_args: Any) -> Any:
        raise StoreError("store unavailable: disk I/O error")

    monkeypatch.setattr(world.ledger, "checkpoints", down)
    monkeypatch.setattr(world.ledger.store, "ping", lambda: False)
    problem(world.client.get("/v1/checkpoints"), 503, "store-unavailable")
    assert (
        problem(world.client.get("/readyz"), 503, "not-ready")["checks"]["store"] == "unreachable"
    )


def test_an_unexpected_error_is_a_500_that_leaks_nothing_and_is_logged(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: Any) -> Any:
        raise RuntimeError("secret internal state 0xdeadbeef")

    monkeypatch.setattr(world.ledger, "checkpoints", broken)
    with caplog.at_level(logging.ERROR, logger="medtrail.api"):
        answer = world.client.get("/v1/checkpoints")
    body = problem(answer, 500, "internal-error")
    assert "secret" not in answer.text
    assert "Traceback" not in answer.text
    assert set(body) == {"type", "title", "status", "detail", "instance", "code", "requestId"}
    assert body["requestId"] == answer.headers["X-Request-ID"]  # to quote in a report
    assert any("secret internal state" in r.getMessage() or r.exc_info for r in caplog.records)
    metrics = world.client.get("/metrics").text
    assert 'route="/v1/checkpoints",status="500"' in metrics


# --------------------------------------------------------------------------- sign-in


def test_a_nonce_is_single_use(world: World) -> None:
    account = fresh_account()
    text = siwe_text(world.client, account)
    body = {"message": text, "signature": personal_sign(account, text)}
    assert world.client.post("/v1/auth/siwe", json=body).status_code == 200
    problem(world.client.post("/v1/auth/siwe", json=body), 401, "siwe-nonce")


def test_a_nonce_not_issued_here_or_expired_is_refused(world: World) -> None:
    account = fresh_account()
    text = siwe_text(world.client, account, nonce="abcdefgh12345678")
    answer = world.client.post(
        "/v1/auth/siwe", json={"message": text, "signature": personal_sign(account, text)}
    )
    problem(answer, 401, "siwe-nonce")

    short = create_app(world.ledger, nonce_ttl=-1)
    client = TestClient(short)
    text = siwe_text(client, account)
    answer = client.post(
        "/v1/auth/siwe", json={"message": text, "signature": personal_sign(account, text)}
    )
    assert "expired" in problem(answer, 401, "siwe-nonce")["detail"]


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"domain": "evil.example"}, 401, "siwe-domain"),
        ({"chain_id": 1}, 401, "siwe-chain-id"),
        ({"expiration_time": later(-60), "issued_at": later(-120)}, 401, "siwe-expired"),
        ({"issued_at": later(3600)}, 401, "siwe-not-yet-valid"),
    ],
)
def test_a_message_for_another_service_or_time_is_refused(
    world: World, overrides: dict[str, Any], status: int, code: str
) -> None:
    account = fresh_account()
    text = siwe_text(world.client, account, **overrides)
    answer = world.client.post(
        "/v1/auth/siwe", json={"message": text, "signature": personal_sign(account, text)}
    )
    problem(answer, status, code)


def test_a_bad_signature_or_a_malformed_message_is_refused(world: World) -> None:
    account, other = fresh_account(), fresh_account()
    text = siwe_text(world.client, account)
    answer = world.client.post(
        "/v1/auth/siwe", json={"message": text, "signature": personal_sign(other, text)}
    )
    problem(answer, 401, "siwe-signature")
    answer = world.client.post(
        "/v1/auth/siwe",
        json={"message": "hello", "signature": personal_sign(account, "hello")},
    )
    problem(answer, 400, "siwe-malformed")


# --------------------------------------------------------------------------- the catalogue


def test_every_problem_type_resolves(world: World) -> None:
    kinds = catalogue()
    listed = world.client.get("/problems").json()["problems"]
    assert {k["code"] for k in listed} == set(kinds)
    for code, kind in kinds.items():
        answer = world.client.get(f"/problems/{code}")
        assert answer.status_code == 200
        assert answer.json() == {
            "type": f"/problems/{code}",
            "code": code,
            "title": kind.title,
            "status": kind.status,
            "description": kind.description,
        }
    page = world.client.get("/problems/batch-rejected", headers={"Accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html")
    assert "batch-rejected" in page.text
    contract = world.client.get("/problems/contract-reverted").json()["description"]
    assert "GranteeNotActive → 409" in contract
