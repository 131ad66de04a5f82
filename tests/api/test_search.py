"""Listing and search (issue 14): ``GET /v1/institutions`` from the chain, and
``GET /v1/events`` by record, patient, institution, type and time — each scoped to what the
caller may see (:mod:`ledger.visibility`) and paged — per role, on SQLite and PostgreSQL.

The expected answers are computed independently: every event as a regulator reads it, then
the visibility rule applied in Python (:func:`ledger.visibility.institution_may_see`) and
the filters applied by hand. A filter must narrow the caller's view, never reach past it."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product
from typing import Any

import pytest

from ledger.events import InstitutionKind
from ledger.visibility import institution_may_see
from tests.api.world import World, hex0x, open_world

ROLES = (
    "regulator",
    "institution_a",
    "institution_b",
    "pharmacy",
    "insurer",
    "patient_p",
    "patient_q",
)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The API world, plus: B reads A's record under P's grant; a pharmacy dispenses A's
    prescription; A claims from the insurer, which pays; B's record gets a prescription."""
    with open_world(tmp_path_factory.mktemp("search"), request.param) as built:
        a, b = built.a, built.b
        env = built.env
        pharmacy, insurer = env.pharmacy, env.insurer
        at = built.ledger.chain.latest_timestamp()
        rx = a.prescription(built.record_a, built.p.address, occurredAt=at)
        built.submit(a, rx)
        built.submit(
            b,
            b.access(
                built.record_a,
                built.p.address,
                custodian=a.address,
                grantId=built.grant_p,
                occurredAt=at,
            ),
        )
        built.submit(pharmacy, pharmacy.dispense(rx, occurredAt=at + 1))
        claim = a.claim(rx, insurer.address, occurredAt=at + 2)
        built.submit(a, claim)
        built.submit(insurer, insurer.payment(claim, occurredAt=at + 3))
        built.submit(b, b.prescription(built.record_b, built.q.address, occurredAt=at + 4))
        built.ledger.anchor_now()
        built.ledger.anchor_now()
        built.keys["pharmacy"] = built.keys_of(pharmacy)
        built.keys["insurer"] = built.keys_of(insurer)
        built.extra["at"] = at
        yield built


def pages(world: World, url: str, role: str, key: str = "events") -> list[dict[str, Any]]:
    """Every item of a paged list, following `Link: rel="next"`."""
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    seen = 0
    while next_url is not None:
        answer = world.client.get(next_url, headers=world.headers(role))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items += body[key]
        link = answer.links.get("next", {}).get("url")
        assert (link is None) == (body["next"] is None)
        next_url = link
        seen += 1
        assert seen < 100
    return items


def everything(world: World) -> list[dict[str, Any]]:
    return pages(world, "/v1/events?limit=1000", "regulator")


def custodian_of(world: World, record: str | None) -> str | None:
    if record is None:
        return None
    parties = world.ledger.record_parties(bytes.fromhex(record[2:]))
    return parties.custodian if parties is not None else None


def may_see(world: World, role: str, event: dict[str, Any]) -> bool:
    """DESIGN §5, in Python, over the served event."""
    if role == "regulator":
        return True
    fields = event["bundle"]["event"]["event"]
    if role.startswith("patient_"):
        who = world.p if role == "patient_p" else world.q
        return bool(fields["patient"] == who.address)
    who_address = {
        "institution_a": world.a.address,
        "institution_b": world.b.address,
        "pharmacy": world.env.pharmacy.address,
        "insurer": world.env.insurer.address,
    }[role]
    other = next(
        (fields[k] for k in ("insurer", "payee") if k in fields),
        fields.get("custodian") if fields.get("custodian") != fields["institution"] else None,
    )
    return institution_may_see(
        who_address, fields["institution"], other, custodian_of(world, event["recordRef"])
    )


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["eventId"] for e in events]


@pytest.mark.parametrize("role", ROLES)
def test_without_filters_each_role_gets_exactly_its_view(world: World, role: str) -> None:
    expected = [e for e in everything(world) if may_see(world, role, e)]
    got = pages(world, "/v1/events?limit=2", role)
    assert ids(got) == ids(expected)
    assert expected, role  # every role sees something here
    leaves = [e["bundle"]["leafIndex"] for e in got]
    assert leaves == sorted(leaves)


def test_the_regulator_sees_the_whole_log(world: World) -> None:
    assert len(everything(world)) == world.ledger.log.head().size


def filters(world: World) -> list[tuple[str, Any]]:
    at = world.extra["at"]
    return [
        ("recordRef", hex0x(world.record_a)),
        ("recordRef", hex0x(world.record_b)),
        ("patient", world.p.address),
        ("patient", world.q.address),
        ("institution", world.a.address),
        ("institution", world.b.address),
        ("institution", world.env.insurer.address),
        ("type", "RecordAccess"),
        ("type", "InsurancePayment"),
        ("from", at + 2),
        ("to", at + 2),
    ]


def matches(world: World, event: dict[str, Any], name: str, value: Any) -> bool:
    fields = event["bundle"]["event"]["event"]
    if name == "recordRef":
        return bool(event["recordRef"] == value)
    if name == "patient":
        return bool(fields["patient"] == value)
    if name == "institution":
        named = {fields["institution"], fields.get("insurer"), fields.get("payee")}
        if fields.get("custodian") not in (None, fields["institution"]):
            named.add(fields["custodian"])
        return value in named
    if name == "type":
        return bool(event["type"] == value)
    if name == "from":
        return bool(fields["occurredAt"] >= value)
    return bool(fields["occurredAt"] < value)


@pytest.mark.parametrize("role", ROLES)
def test_a_filter_narrows_the_view_and_never_reaches_past_it(world: World, role: str) -> None:
    every = everything(world)
    for name, value in filters(world):
        expected = [e for e in every if may_see(world, role, e) and matches(world, e, name, value)]
        got = pages(world, f"/v1/events?{name}={value}&limit=1000", role)
        assert ids(got) == ids(expected), (role, name, value)


def test_filters_combine(world: World) -> None:
    every = everything(world)
    at = world.extra["at"]
    for (n1, v1), (n2, v2) in product(
        filters(world)[:7], [("type", "RecordAccess"), ("from", at + 1)]
    ):
        for role in ("regulator", "institution_b", "patient_p"):
            expected = [
                e
                for e in every
                if may_see(world, role, e)
                and matches(world, e, n1, v1)
                and matches(world, e, n2, v2)
            ]
            got = pages(world, f"/v1/events?{n1}={v1}&{n2}={v2}&limit=1000", role)
            assert ids(got) == ids(expected), (role, n1, v1, n2, v2)


def test_another_institutions_record_shows_only_what_the_caller_took_part_in(
    world: World,
) -> None:
    """B read A's record once under P's grant: searching A's record, B gets that access and
    nothing of A's own events; searching A as institution, B gets the same one event."""
    by_record = pages(world, f"/v1/events?recordRef={hex0x(world.record_a)}", "institution_b")
    assert [e["bundle"]["event"]["event"]["institution"] for e in by_record] == [world.b.address]
    by_a = pages(world, f"/v1/events?institution={world.a.address}", "institution_b")
    assert ids(by_a) == ids(by_record)
    assert pages(world, f"/v1/events?patient={world.q.address}", "patient_p") == []


def test_search_needs_credentials_and_checks_its_query(world: World) -> None:
    assert world.client.get("/v1/events").status_code == 401
    for query in (
        "type=Bogus",
        "from=-1",
        "recordRef=0x12",
        "patient=0xAdmin",
        "limit=1001",
        "after=-2",
        f"recordref={hex0x(world.record_a)}",  # misspelt: refused, not ignored
    ):
        answer = world.client.get(f"/v1/events?{query}", headers=world.headers("regulator"))
        assert answer.status_code == 422, (query, answer.text)
        assert answer.json()["code"] == "validation-error"


# --------------------------------------------------------------------------- institutions


def test_institutions_are_listed_in_registration_order_from_the_chain(world: World) -> None:
    env = world.env
    listed = pages(world, "/v1/institutions?limit=2", "regulator", "institutions")
    expected = [env.hospital, env.pharmacy, env.insurer, world.b]
    assert [i["address"] for i in listed][: len(expected)] == [x.address for x in expected]
    first = listed[0]
    assert first["kind"] == "hospital"
    assert first["name"] == env.hospital.name
    assert first["active"] is True
    assert first["registeredAt"] > 0


def test_a_registration_made_straight_on_chain_and_a_suspension_show(world: World) -> None:
    newcomer = world.new_institution(InstitutionKind.PHARMACY)  # through the ledger
    direct = world.env.institution("Straight On Chain", InstitutionKind.INSURER, register=False)
    world.ledger.chain.register_institution(direct.address, InstitutionKind.INSURER, direct.name)
    world.ledger.suspend_institution(newcomer.address)
    listed = pages(world, "/v1/institutions", "institution_a", "institutions")
    by_address = {i["address"]: i for i in listed}
    assert by_address[newcomer.address]["active"] is False
    assert by_address[direct.address]["kind"] == "insurer"
    assert [i["address"] for i in listed][-2:] == [newcomer.address, direct.address]
    insurers = pages(world, "/v1/institutions?kind=insurer", "patient_p", "institutions")
    assert {i["kind"] for i in insurers} == {"insurer"}
    assert direct.address in {i["address"] for i in insurers}


@pytest.mark.parametrize("role", ROLES)
def test_every_authenticated_caller_may_list_institutions(world: World, role: str) -> None:
    answer = world.client.get("/v1/institutions", headers=world.headers(role))
    assert answer.status_code == 200, answer.text


def test_listing_institutions_needs_credentials_and_a_known_cursor(world: World) -> None:
    assert world.client.get("/v1/institutions").status_code == 401
    unknown = world.client.get(
        f"/v1/institutions?after={world.p.address}", headers=world.headers("regulator")
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["loc"] == ["query", "after"]
    bad = world.client.get("/v1/institutions?kind=clinic", headers=world.headers("regulator"))
    assert bad.status_code == 422
