"""Who may do what: every endpoint by every role, with other parties' object ids.

Roles: anonymous, institution A (hospital holding record A of patient P), institution B
(hospital holding record B of patient Q; grantee of P's grant ``grant_p``), a regulator,
patients P and Q. Objects not visible to a role answer 404; collections named by another
party's address 403; missing credentials 401; roles that may never do it 403.

Each case that succeeds builds fresh objects (new events, new institutions, new grants, new
keys), so the table's rows are independent of each other and of their order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from ledger.events import InstitutionKind
from tests.api.world import ROLES, World, bearer, event_json, personal_sign, sign_in, siwe_text
from tests.support.actors import Patient
from wallets.consent import ConsentTypedData, sign_increase_nonce

Build = Callable[[World, str], Any]


@dataclass(frozen=True)
class Case:
    method: str
    path: Build
    expected: dict[str, int]
    body: Build | None = None
    #: Headers for a role other than its standing credential (e.g. a session to sign out).
    headers: Build | None = None


def everyone(status: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, status)


def table(anonymous: int, a: int, b: int, regulator: int, p: int, q: int) -> dict[str, int]:
    return dict(zip(ROLES, (anonymous, a, b, regulator, p, q), strict=True))


def h(value: bytes) -> str:
    return "0x" + value.hex()


# -- bodies ---------------------------------------------------------------------------------


def event_by_a(w: World, _role: str) -> dict[str, Any]:
    event = w.a.access(w.record_a, w.p.address, occurredAt=w.ledger.chain.latest_timestamp())
    return {"events": [event_json(w.a.sign(event))]}


def grant_by_p(w: World, _role: str) -> dict[str, Any]:
    return w.grant_body(w.p, w.b.address, w.record_a)


def revoke_path(w: World, _role: str) -> str:
    grant_id = w.relay_grant(w.p, w.b.address, w.record_a)
    w.extra["revoke"] = grant_id
    return f"/v1/grants/{grant_id}/revoke"


def revoke_by_p(w: World, _role: str) -> dict[str, Any]:
    return w.revoke_body(w.p, w.extra["revoke"])


def increase_nonce_by_p(w: World, _role: str) -> dict[str, Any]:
    now = w.ledger.chain.latest_timestamp()
    nonce = w.ledger.chain.consent_nonce(w.p.address)
    typed = ConsentTypedData.from_definitions(w.ledger.typed_data())
    signed = sign_increase_nonce(
        w.p.account, typed, new_nonce=nonce + 1, nonce=nonce, deadline=now + 600, now=now
    )
    return {"newNonce": nonce + 1, "deadline": now + 600, "signature": h(signed.signature)}


def new_institution_body(_w: World, _role: str) -> dict[str, Any]:
    return {"address": Patient().address, "kind": "pharmacy", "name": "New Pharmacy"}


def registered_path(action: str) -> Build:
    def build(w: World, _role: str) -> str:
        inst = w.new_institution(InstitutionKind.PHARMACY)
        if action == "reinstate":
            w.ledger.suspend_institution(inst.address)
        return f"/v1/institutions/{inst.address}/{action}"

    return build


def fresh_key_path(w: World, _role: str) -> str:
    info, _token = w.credentials().issue_key("regulator", None, "to revoke")
    return f"/v1/api-keys/{info.key_id}"


def siwe_body(w: World, _role: str) -> dict[str, Any]:
    account = Patient().account
    text = siwe_text(w.client, account)
    return {"message": text, "signature": personal_sign(account, text)}


def fresh_session(w: World, role: str) -> dict[str, str]:
    """Sign-out ends the session: patients sign out of a fresh one."""
    if role == "patient_p":
        return bearer(sign_in(w.client, w.p.account))
    if role == "patient_q":
        return bearer(sign_in(w.client, w.q.account))
    return w.headers(role)


def decision_body(w: World, _role: str) -> dict[str, Any]:
    return {
        "grantee": w.b.address,
        "patient": w.p.address,
        "recordRef": h(w.record_a),
        "purpose": 0,
    }


def const(value: str) -> Build:
    return lambda _w, _role: value


CASES: dict[str, Case] = {
    # -- public -----------------------------------------------------------------------------
    "typed-data": Case("GET", const("/v1/typed-data"), everyone(200)),
    "deployment": Case("GET", const("/v1/deployment"), everyone(200)),
    "log-head": Case("GET", const("/v1/log/head"), everyone(200)),
    "log-consistency": Case("GET", const("/v1/log/consistency?from=1&to=3"), everyone(200)),
    "log-inclusion": Case("GET", const("/v1/log/inclusion?leafIndex=0&treeSize=3"), everyone(200)),
    "checkpoints": Case("GET", const("/v1/checkpoints"), everyone(200)),
    "checkpoints-latest": Case("GET", const("/v1/checkpoints/latest"), everyone(200)),
    "consent-nonce": Case(
        "GET", lambda w, _r: f"/v1/patients/{w.p.address}/consent-nonce", everyone(200)
    ),
    "auth-nonce": Case("GET", const("/v1/auth/nonce"), everyone(200)),
    "auth-siwe": Case("POST", const("/v1/auth/siwe"), everyone(200), body=siwe_body),
    "healthz": Case("GET", const("/healthz"), everyone(200)),
    "readyz": Case("GET", const("/readyz"), everyone(200)),
    "metrics": Case("GET", const("/metrics"), everyone(200)),
    "problems": Case("GET", const("/problems"), everyone(200)),
    "problem": Case("GET", const("/problems/forbidden"), everyone(200)),
    "no-such-route": Case("GET", const("/v1/nothing-here"), everyone(404)),
    # -- events -----------------------------------------------------------------------------
    "submit-events (A's event)": Case(
        "POST", const("/v1/events"), table(401, 200, 403, 403, 403, 403), body=event_by_a
    ),
    "event of A": Case(
        "GET", lambda w, _r: f"/v1/events/{h(w.event_a)}", table(401, 200, 404, 200, 200, 404)
    ),
    "event of B": Case(
        "GET", lambda w, _r: f"/v1/events/{h(w.event_b)}", table(401, 404, 200, 200, 404, 200)
    ),
    "trail of A's record": Case(
        "GET",
        lambda w, _r: f"/v1/records/{h(w.record_a)}/trail",
        table(401, 200, 404, 200, 200, 404),
    ),
    "verified trail of A's record": Case(
        "GET",
        lambda w, _r: f"/v1/records/{h(w.record_a)}/trail?verify=true",
        table(401, 200, 404, 200, 200, 404),
    ),
    "trail of B's record": Case(
        "GET",
        lambda w, _r: f"/v1/records/{h(w.record_b)}/trail",
        table(401, 404, 200, 200, 404, 200),
    ),
    "log-entries": Case("GET", const("/v1/log/entries"), table(401, 403, 403, 200, 403, 403)),
    # Any authenticated caller; the search answers within the caller's view (test_search).
    "institutions": Case("GET", const("/v1/institutions"), table(401, 200, 200, 200, 200, 200)),
    "event search": Case("GET", const("/v1/events"), table(401, 200, 200, 200, 200, 200)),
    # -- consent ----------------------------------------------------------------------------
    "relay P's grant": Case(
        "POST", const("/v1/grants"), table(401, 403, 403, 403, 201, 403), body=grant_by_p
    ),
    "relay P's revocation": Case(
        "POST", revoke_path, table(401, 403, 403, 403, 200, 404), body=revoke_by_p
    ),
    "P's grant (to B)": Case(
        "GET", lambda w, _r: f"/v1/grants/{w.grant_p}", table(401, 404, 200, 200, 200, 404)
    ),
    "P's grants": Case(
        "GET",
        lambda w, _r: f"/v1/patients/{w.p.address}/grants",
        table(401, 200, 200, 200, 200, 403),
    ),
    "P's accesses": Case(
        "GET",
        lambda w, _r: f"/v1/patients/{w.p.address}/accesses",
        table(401, 403, 403, 200, 200, 403),
    ),
    "P's nonce increase": Case(
        "POST",
        lambda w, _r: f"/v1/patients/{w.p.address}/increase-nonce",
        table(401, 403, 403, 403, 200, 403),
        body=increase_nonce_by_p,
    ),
    "access decision about P": Case(
        "POST",
        const("/v1/access-decisions"),
        table(401, 200, 200, 200, 200, 403),
        body=decision_body,
    ),
    # -- admin ------------------------------------------------------------------------------
    "register institution": Case(
        "POST",
        const("/v1/institutions"),
        table(401, 403, 403, 201, 403, 403),
        body=new_institution_body,
    ),
    "institution A": Case(
        "GET", lambda w, _r: f"/v1/institutions/{w.a.address}", table(401, 200, 200, 200, 200, 200)
    ),
    "suspend institution": Case(
        "POST", registered_path("suspend"), table(401, 403, 403, 200, 403, 403)
    ),
    "reinstate institution": Case(
        "POST", registered_path("reinstate"), table(401, 403, 403, 200, 403, 403)
    ),
    "issue API key": Case(
        "POST",
        const("/v1/api-keys"),
        table(401, 403, 403, 201, 403, 403),
        body=lambda _w, _r: {"role": "regulator", "label": "second regulator"},
    ),
    "list API keys": Case("GET", const("/v1/api-keys"), table(401, 403, 403, 200, 403, 403)),
    "revoke API key": Case("DELETE", fresh_key_path, table(401, 403, 403, 200, 403, 403)),
    # -- auth -------------------------------------------------------------------------------
    "whoami": Case("GET", const("/v1/auth/whoami"), table(401, 200, 200, 200, 200, 200)),
    "logout": Case(
        "POST", const("/v1/auth/logout"), table(401, 403, 403, 403, 204, 204), headers=fresh_session
    ),
}

MATRIX = [pytest.param(name, role, id=f"{name}-{role}") for name in CASES for role in ROLES]


@pytest.mark.parametrize(("name", "role"), MATRIX)
def test_access_matrix(world: World, name: str, role: str) -> None:
    case = CASES[name]
    path = case.path(world, role)
    body = case.body(world, role) if case.body is not None else None
    headers = case.headers(world, role) if case.headers is not None else world.headers(role)
    answer = world.client.request(case.method, path, json=body, headers=headers)
    expected = case.expected[role]
    assert answer.status_code == expected, answer.text
    if expected >= 400:
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["status"] == expected
        assert problem["type"] == f"/problems/{problem['code']}"
        if expected == 401:
            assert answer.headers["www-authenticate"] == "Bearer"


def test_the_matrix_covers_every_documented_operation(world: World) -> None:
    documented = {
        (method.upper(), path)
        for path, operations in world.app.openapi()["paths"].items()
        for method in operations
    }
    covered = set()
    for case in CASES.values():
        path = case.path(world, "regulator")
        for template_path, method in ((p, m) for m, p in documented):
            if method == case.method and _matches(template_path, path.split("?")[0]):
                covered.add((method, template_path))
    assert documented - covered == set()


def _matches(template: str, path: str) -> bool:
    parts, actual = template.split("/"), path.split("/")
    return len(parts) == len(actual) and all(
        t == a or (t.startswith("{") and t.endswith("}"))
        for t, a in zip(parts, actual, strict=True)
    )


def test_an_institution_reads_its_own_part_of_a_record_it_took_part_in(world: World) -> None:
    """B accesses A's record under P's grant: B may then read the record's trail, but only
    the events it took part in (DESIGN §5), not A's own; the custodian A reads both."""
    record = world.a.record("mrn-shared")
    at = world.ledger.chain.latest_timestamp()
    own = world.a.access(record, world.p.address, occurredAt=at)
    world.submit(world.a, own)
    grant = world.relay_grant(world.p, world.b.address, record)
    by_b = world.b.access(
        record,
        world.p.address,
        custodian=world.a.address,
        grantId=grant,
        occurredAt=world.ledger.chain.latest_timestamp(),
    )
    world.submit(world.b, by_b)
    trail = world.client.get(
        f"/v1/records/{h(record)}/trail", headers=world.headers("institution_b")
    )
    assert trail.status_code == 200
    assert [e["eventId"] for e in trail.json()["events"]] == [h(by_b.eventId)]
    assert trail.json()["events"][0]["consent"] == "covered"
    hidden = world.client.get(
        f"/v1/events/{h(own.eventId)}", headers=world.headers("institution_b")
    )
    assert hidden.status_code == 404
    assert hidden.json()["code"] == "not-found"
    custodian = world.client.get(
        f"/v1/records/{h(record)}/trail", headers=world.headers("institution_a")
    )
    assert [e["eventId"] for e in custodian.json()["events"]] == [
        h(own.eventId),
        h(by_b.eventId),
    ]
