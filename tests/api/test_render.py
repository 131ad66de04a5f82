"""api/render.py builds answers as dicts, for speed, bypassing FastAPI's response models: each
renderer is checked here against the model that documents it (``ledger.wire`` for what the
wallet and the tools read), strictly (no field missing, none extra, every value of its type)
and both ways (the model gives back exactly the dict), so that the dicts and the one
definition of the wire cannot drift apart."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from api.render import checkpoint_json, entry_json, event_json, grant_json, institution_json
from api.schemas import GrantOut, InstitutionOut
from ledger.chain.model import Deployment
from ledger.verify import Finding
from ledger.wire import (
    AccessesOut,
    CheckpointOut,
    CheckpointsOut,
    EventOut,
    LogEntriesOut,
    LogEntryOut,
    LogHeadOut,
    TrailOut,
)
from tests.api.world import World, hex0x


def _same(model: type[BaseModel], rendered: dict[str, Any]) -> BaseModel:
    """``rendered`` is exactly an instance of ``model``: it validates with no extra field,
    and serialises back to the very same dict."""
    parsed = model.model_validate(rendered, extra="forbid")
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == rendered
    return parsed


def test_event_and_entry_renderers_are_the_wire_models(world: World) -> None:
    ledger = world.ledger
    views = ledger.trail(world.record_a)
    assert views
    for view in views:
        _same(EventOut, event_json(view))
        finding = Finding("x-code", "warning", "detail", view.event_id, {"n": 1})
        _same(EventOut, event_json(view, [finding]))
    for row in ledger.entries(0, 100):
        _same(LogEntryOut, entry_json(row))


def test_checkpoint_grant_and_institution_renderers_are_their_models(world: World) -> None:
    ledger = world.ledger
    rows = ledger.checkpoints()
    assert rows
    for row in rows:
        _same(CheckpointOut, checkpoint_json(row))
    _same(GrantOut, grant_json(ledger.grant(world.grant_p)))
    info = ledger.institution(world.a.address)
    _same(InstitutionOut, institution_json(info))
    _same(InstitutionOut, institution_json(info, b"\x11" * 32))


def test_the_served_answers_are_the_wire_models(world: World) -> None:
    """Whole answers, as served (routes assemble pages around the renderers)."""
    client, regulator = world.client, world.headers("regulator")
    record = hex0x(world.record_a)
    answers: list[tuple[type[BaseModel], str]] = [
        (TrailOut, f"/v1/records/{record}/trail"),
        (TrailOut, f"/v1/records/{record}/trail?verify=true"),
        (EventOut, f"/v1/events/{hex0x(world.event_a)}"),
        (LogHeadOut, "/v1/log/head"),
        (LogEntriesOut, "/v1/log/entries?start=0&limit=5"),
        (CheckpointsOut, "/v1/checkpoints"),
        (CheckpointOut, "/v1/checkpoints/latest"),
        (Deployment, "/v1/deployment"),
    ]
    for model, path in answers:
        answer = client.get(path, headers=regulator)
        assert answer.status_code == 200, (path, answer.text)
        _same(model, answer.json())
    accesses = client.get(
        f"/v1/patients/{world.p.address}/accesses", headers=world.headers("patient_p")
    )
    assert accesses.status_code == 200, accesses.text
    _same(AccessesOut, accesses.json())
    verified = client.get(f"/v1/records/{record}/trail?verify=true", headers=regulator).json()
    assert verified["findings"] == []  # the whole page's own findings: none
    assert all(event["findings"] is not None for event in verified["events"])
