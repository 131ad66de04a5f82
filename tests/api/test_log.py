"""Happy paths of the log endpoints: head, entries (mirroring), proofs, checkpoints,
deployment, typed data."""

from __future__ import annotations

from ledger import merkle
from ledger.events import SignedEvent
from tests.api.world import World


def unhex(text: str) -> bytes:
    return bytes.fromhex(text[2:])


def test_a_mirror_pages_through_the_log_and_rebuilds_its_root(world: World) -> None:
    world.ledger.log.integrate_all()
    regulator = world.headers("regulator")
    head = world.client.get("/v1/log/head").json()
    assert head["treeSize"] >= 3
    leaves: list[bytes] = []
    start: int | None = 0
    while start is not None:
        page = world.client.get(f"/v1/log/entries?start={start}&limit=2", headers=regulator).json()
        assert page["start"] == start
        assert page["treeSize"] == head["treeSize"]
        assert len(page["entries"]) <= 2
        for entry in page["entries"]:
            assert entry["leafIndex"] == len(leaves)
            signed = SignedEvent.model_validate(entry["event"])
            assert signed.digest(world.ledger.domain) == unhex(entry["eventDigest"])
            leaves.append(merkle.leaf_hash(unhex(entry["eventDigest"])))
        start = page["next"]
    assert len(leaves) == head["treeSize"]
    assert merkle.MemoryTree(leaves).root() == unhex(head["rootHash"])
    past = world.client.get(f"/v1/log/entries?start={head['treeSize']}", headers=regulator).json()
    assert past["entries"] == []
    assert past["next"] is None


def test_consistency_and_inclusion_proofs_verify(world: World) -> None:
    world.ledger.log.integrate_all()
    size = world.client.get("/v1/log/head").json()["treeSize"]
    new_root = world.ledger.log.root_at(size)
    old_root = world.ledger.log.root_at(1)
    answer = world.client.get(f"/v1/log/consistency?from=1&to={size}").json()
    assert answer["from"] == 1
    assert answer["to"] == size
    merkle.verify_consistency(1, size, old_root, new_root, [unhex(p) for p in answer["proof"]])

    regulator = world.headers("regulator")
    first = world.client.get("/v1/log/entries?limit=1", headers=regulator).json()["entries"][0]
    inclusion = world.client.get(f"/v1/log/inclusion?leafIndex=0&treeSize={size}").json()
    assert inclusion["leafIndex"] == 0
    merkle.verify_inclusion(
        merkle.leaf_hash(unhex(first["eventDigest"])),
        0,
        size,
        [unhex(p) for p in inclusion["proof"]],
        new_root,
    )


def test_checkpoints_are_listed_and_the_latest_is_on_chain(world: World) -> None:
    checkpoints = world.client.get("/v1/checkpoints").json()["checkpoints"]
    assert checkpoints
    latest = world.client.get("/v1/checkpoints/latest").json()
    on_chain = world.ledger.chain.latest_checkpoint()
    assert on_chain is not None
    assert latest["treeSize"] == on_chain.tree_size
    assert unhex(latest["rootHash"]) == on_chain.root_hash
    assert latest["status"] in ("anchored", "confirmed")
    assert latest["transactionHash"].startswith("0x")
    assert latest["blockNumber"] == on_chain.block_number
    assert latest in checkpoints


def test_deployment_and_typed_data_describe_the_chain(world: World) -> None:
    deployment = world.client.get("/v1/deployment").json()
    d = world.ledger.deployment
    assert deployment == {
        "chainId": d.chain_id,
        "institutionRegistry": d.institution_registry,
        "auditLog": d.audit_log,
        "consentRegistry": d.consent_registry,
        "blockNumber": d.block_number,
        "sourcesHash": d.sources_hash,
    }
    typed = world.client.get("/v1/typed-data").json()
    assert typed["domains"]["auditLog"]["verifyingContract"] == d.audit_log
    assert typed["domains"]["consentRegistry"]["chainId"] == d.chain_id
    assert {"RecordAccess", "Grant", "Revoke", "Receipt"} <= set(typed["types"])


def test_health_and_readiness(world: World) -> None:
    assert world.client.get("/healthz").json() == {"status": "ok"}
    ready = world.client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["checks"] == {"store": "ok", "chain": "ok", "anchoring": "ok"}
    assert ready["blockNumber"] == world.ledger.chain.block_number()
