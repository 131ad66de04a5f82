"""Every list the API serves is paged (issue 12 item 7; docs/wire.md "Paging"): `limit`
(1..1000, default 100), `after` = the key of the last item received, `next` in the body (null
on the last page) and a `Link: <…>; rel="next"` header. Pages chain to the end with no
duplicate and no gap, on SQLite and PostgreSQL; a page is one bounded query.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import event

from api.paging import DEFAULT_LIMIT, MAX_LIMIT
from ledger.events import InstitutionKind
from tests.api.world import World, bearer, open_world, sign_in
from tests.support.actors import Institution, Patient

LINK = re.compile(r'^<([^>]+)>; rel="next"$')


def h(value: bytes) -> str:
    return "0x" + value.hex()


@dataclass
class Lists:
    world: World
    patient: Patient
    session: dict[str, str]
    record: bytes
    #: Event ids of the record's events, in log order; those hospital B took part in.
    trail: list[str]
    trail_of_b: list[str]
    #: The patient's grants: all, and those made to B.
    grants: list[int]
    grants_to_b: list[int]


def _store_params() -> list[Any]:
    return ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=_store_params())
def lists(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lists]:
    """A record with 24 events — 19 by its custodian A, 5 by hospital B under a grant, B's
    spread through the log — 5 grants of its patient (3 to B), checkpoints made in between."""
    with open_world(tmp_path_factory.mktemp(f"paging-{request.param}"), request.param) as world:
        ledger = world.ledger
        a, b = world.a, world.b
        patient = Patient()
        record = a.record("mrn-paged")
        pharmacy = world.new_institution(InstitutionKind.PHARMACY)
        grants = [
            world.relay_grant(patient, grantee, record)
            for grantee in (b.address, pharmacy.address, b.address, pharmacy.address, b.address)
        ]
        trail: list[str] = []
        trail_of_b: list[str] = []
        for n in range(24):
            at = ledger.chain.latest_timestamp()
            by_b = n % 5 == 3
            inst: Institution = b if by_b else a
            access = (
                b.access(
                    record, patient.address, custodian=a.address, grantId=grants[0], occurredAt=at
                )
                if by_b
                else a.access(record, patient.address, occurredAt=at)
            )
            ledger.submit([inst.sign(access)])
            trail.append(h(access.eventId))
            if by_b:
                trail_of_b.append(h(access.eventId))
            if n % 6 == 5:
                ledger.anchor_now()
        ledger.anchor_now()
        assert len(trail_of_b) == 5
        yield Lists(
            world=world,
            patient=patient,
            session=bearer(sign_in(world.client, patient.account)),
            record=record,
            trail=trail,
            trail_of_b=trail_of_b,
            grants=grants,
            grants_to_b=[g for g, n in zip(grants, range(5), strict=True) if n % 2 == 0],
        )


#: The key of an item of each list: what `after` and `next` name.
CURSOR: dict[str, Callable[[dict[str, Any]], Any]] = {
    "events": lambda e: e["bundle"]["leafIndex"],
    "accesses": lambda e: e["bundle"]["leafIndex"],
    "grants": lambda g: g["grantId"],
    "checkpoints": lambda c: c["treeSize"],
    "keys": lambda k: k["keyId"],
}


def follow(
    world: World,
    url: str,
    items: str,
    key: Callable[[dict[str, Any]], Any],
    headers: dict[str, str],
    limit: int,
) -> list[Any]:
    """Every item of a paged list, following the `Link` header, checking each page against
    its `next` and the paging contract; ``key`` of each item, in order."""
    keys: list[Any] = []
    cursors: list[Any] = []
    pages = 0
    while url is not None:
        answer = world.client.get(url, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        page = [key(item) for item in body[items]]
        cursors += [CURSOR[items](item) for item in body[items]]
        pages += 1
        link = answer.headers.get("link")
        if body["next"] is None:
            assert link is None
            assert len(page) <= limit
            url = None  # type: ignore[assignment]
        else:
            assert len(page) == limit  # only the last page is short
            assert body["next"] == cursors[-1]
            match = LINK.match(link or "")
            assert match is not None, link
            url = match.group(1)
            query = parse_qs(urlsplit(url).query)
            assert query["after"] == [str(body["next"])]
            assert query["limit"] == [str(limit)]
        keys += page
    assert pages == max(1, -(-len(keys) // limit))
    assert len(set(cursors)) == len(cursors)  # no item twice
    return keys


def test_a_trail_s_pages_chain_to_the_end(lists: Lists) -> None:
    url = f"/v1/records/{h(lists.record)}/trail?limit=4"
    served = follow(
        lists.world, url, "events", lambda e: e["eventId"], lists.world.headers("regulator"), 4
    )
    assert served == lists.trail
    # by leaf index: the `after` of each page is a leaf
    leaves = follow(
        lists.world,
        url,
        "events",
        lambda e: e["bundle"]["leafIndex"],
        lists.world.headers("regulator"),
        4,
    )
    assert leaves == sorted(set(leaves))


def test_an_institution_s_part_of_a_trail_pages_too(lists: Lists) -> None:
    url = f"/v1/records/{h(lists.record)}/trail?limit=2"
    served = follow(
        lists.world, url, "events", lambda e: e["eventId"], lists.world.headers("institution_b"), 2
    )
    assert served == lists.trail_of_b
    custodian = follow(
        lists.world, url, "events", lambda e: e["eventId"], lists.world.headers("institution_a"), 2
    )
    assert custodian == lists.trail


def test_a_verified_trail_pages_with_the_same_findings(lists: Lists) -> None:
    """`verify=true` judges each page as it judges the whole trail."""
    regulator = lists.world.headers("regulator")
    whole = lists.world.client.get(
        f"/v1/records/{h(lists.record)}/trail?verify=true&limit=100", headers=regulator
    ).json()["events"]
    paged = follow(
        lists.world,
        f"/v1/records/{h(lists.record)}/trail?verify=true&limit=3",
        "events",
        lambda e: (e["eventId"], [f["code"] for f in e["findings"]]),
        regulator,
        3,
    )
    assert paged == [(e["eventId"], [f["code"] for f in e["findings"]]) for e in whole]


def test_a_patient_s_accesses_page_to_the_end(lists: Lists) -> None:
    url = f"/v1/patients/{lists.patient.address}/accesses?limit=5"
    served = follow(lists.world, url, "accesses", lambda e: e["eventId"], lists.session, 5)
    assert served == lists.trail
    regulator = follow(
        lists.world, url, "accesses", lambda e: e["eventId"], lists.world.headers("regulator"), 5
    )
    assert regulator == lists.trail


def test_grants_page_by_id_and_an_institution_sees_its_own(lists: Lists) -> None:
    url = f"/v1/patients/{lists.patient.address}/grants?limit=2"
    assert (
        follow(lists.world, url, "grants", lambda g: g["grantId"], lists.session, 2) == lists.grants
    )
    to_b = follow(
        lists.world, url, "grants", lambda g: g["grantId"], lists.world.headers("institution_b"), 2
    )
    assert to_b == lists.grants_to_b


def test_checkpoints_page_by_tree_size(lists: Lists) -> None:
    sizes = follow(
        lists.world, "/v1/checkpoints?limit=1", "checkpoints", lambda c: c["treeSize"], {}, 1
    )
    assert sizes == [c.tree_size for c in lists.world.ledger.checkpoints()]
    assert len(sizes) >= 4
    # `after=N-1&limit=1` reads the checkpoint of size N
    one = lists.world.client.get(f"/v1/checkpoints?after={sizes[2] - 1}&limit=1").json()
    assert [c["treeSize"] for c in one["checkpoints"]] == [sizes[2]]


def test_api_keys_page_oldest_first(lists: Lists) -> None:
    world = lists.world
    for n in range(5):
        world.credentials().issue_key("regulator", None, f"paged {n}")
    regulator = world.headers("regulator")
    ids = follow(world, "/v1/api-keys?limit=2", "keys", lambda k: k["keyId"], regulator, 2)
    assert ids == [k.key_id for k in world.credentials().list_keys()]
    assert len(ids) == len(set(ids)) >= 8


def test_events_appended_between_pages_are_neither_skipped_nor_repeated(lists: Lists) -> None:
    world = lists.world
    record = world.a.record("mrn-growing")
    patient = Patient()

    def add() -> str:
        access = world.a.access(
            record, patient.address, occurredAt=world.ledger.chain.latest_timestamp()
        )
        world.ledger.submit([world.a.sign(access)])
        return h(access.eventId)

    expected = [add() for _ in range(3)]
    url = f"/v1/records/{h(record)}/trail?limit=2"
    regulator = world.headers("regulator")
    first = world.client.get(url, headers=regulator).json()
    expected += [add() for _ in range(3)]
    served = [e["eventId"] for e in first["events"]]
    after = first["next"]
    while after is not None:
        page = world.client.get(f"{url}&after={after}", headers=regulator).json()
        served += [e["eventId"] for e in page["events"]]
        after = page["next"]
    assert served == expected


LISTS: dict[str, Callable[[Lists], str]] = {
    "trail": lambda lists: f"/v1/records/{h(lists.record)}/trail",
    "accesses": lambda lists: f"/v1/patients/{lists.patient.address}/accesses",
    "grants": lambda lists: f"/v1/patients/{lists.patient.address}/grants",
    "checkpoints": lambda _lists: "/v1/checkpoints",
    "api-keys": lambda _lists: "/v1/api-keys",
    "log-entries": lambda _lists: "/v1/log/entries",
}


@pytest.mark.parametrize("name", list(LISTS))
def test_limit_is_bounded(lists: Lists, name: str) -> None:
    url = LISTS[name](lists)
    regulator = lists.world.headers("regulator")
    for limit in (0, -1, MAX_LIMIT + 1, 10**30):
        answer = lists.world.client.get(f"{url}?limit={limit}", headers=regulator)
        assert answer.status_code == 422, (limit, answer.text)
        assert answer.json()["code"] == "validation-error"
        assert answer.json()["errors"][0]["loc"] == ["query", "limit"]
    assert lists.world.client.get(f"{url}?limit={MAX_LIMIT}", headers=regulator).status_code == 200


@pytest.mark.parametrize("name", [n for n in LISTS if n != "log-entries"])
def test_a_malformed_cursor_is_refused(lists: Lists, name: str) -> None:
    url = LISTS[name](lists)
    regulator = lists.world.headers("regulator")
    for after in ("-1", "abc", "0x00"):
        answer = lists.world.client.get(f"{url}?after={after}", headers=regulator)
        assert answer.status_code == 422, (after, answer.text)
        assert answer.json()["errors"][0]["loc"] == ["query", "after"]


def test_an_api_key_cursor_naming_no_key_is_refused(lists: Lists) -> None:
    answer = lists.world.client.get(
        "/v1/api-keys?after=0123456789abcdef", headers=lists.world.headers("regulator")
    )
    assert answer.status_code == 422
    problem = answer.json()
    assert problem["code"] == "validation-error"
    assert problem["errors"][0]["loc"] == ["query", "after"]


def test_the_log_entries_link_to_their_next_page(lists: Lists) -> None:
    answer = lists.world.client.get(
        "/v1/log/entries?limit=3", headers=lists.world.headers("regulator")
    )
    assert answer.json()["next"] == 3
    assert answer.headers["link"] == '</v1/log/entries?limit=3&start=3>; rel="next"'


def test_a_long_list_is_served_in_bounded_pages_by_bounded_queries(lists: Lists) -> None:
    """A patient with more accesses than a page: the default page holds DEFAULT_LIMIT of them,
    its size is bounded, and every statement reading events carries a LIMIT."""
    world = lists.world
    record = world.a.record("mrn-long")
    patient = Patient()
    total = DEFAULT_LIMIT + 30
    at = world.ledger.chain.latest_timestamp()
    signed = [
        world.a.sign(world.a.access(record, patient.address, occurredAt=at)) for _ in range(total)
    ]
    for start in range(0, total, 50):
        world.ledger.submit(signed[start : start + 50])
    statements: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = world.ledger.store.engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        answer = world.client.get(
            f"/v1/patients/{patient.address}/accesses", headers=world.headers("regulator")
        )
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert answer.status_code == 200
    body = answer.json()
    assert len(body["accesses"]) == DEFAULT_LIMIT
    assert body["next"] is not None
    # one pending bundle is ~1.3 KiB of JSON: a page is bounded by its limit, not the list
    assert len(answer.content) < DEFAULT_LIMIT * 2048
    reads = [s for s in statements if re.search(r"\bFROM events\b", s)]
    assert reads
    # The one statement without a LIMIT reads the index's list of the whole history (served
    # with every page, docs/wire.md "The index"): one integer per event, no row.
    whole = [s for s in reads if re.match(r"SELECT events\.leaf_index\s+FROM events\b", s)]
    assert len(whole) <= 1, whole
    assert all(re.search(r"\bLIMIT\b", s) for s in reads if s not in whole), reads
    rest = world.client.get(
        f"/v1/patients/{patient.address}/accesses?after={body['next']}",
        headers=world.headers("regulator"),
    ).json()
    assert len(rest["accesses"]) == total - DEFAULT_LIMIT
    assert rest["next"] is None
    served = [e["eventId"] for e in body["accesses"] + rest["accesses"]]
    assert served == [h(s.event_id) for s in signed]
