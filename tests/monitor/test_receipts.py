"""An institution's receipts watch: each receipt against the chain's latest checkpoint and the
operator's public inclusion proof — kept, replaced, dropped; and its command's refusals."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ledger import merkle
from ledger.eip712 import sign_digest
from ledger.supervision import PromisedLeaf, ReceiptCode, RuleSet, builtin_rules, receipt_findings
from ledger.verify import FindingCode, receipt_batch_digest, receipt_digest
from scripts._api import ApiClient
from scripts._common import ToolError
from scripts.monitor.cli import main as monitor_main
from scripts.monitor.core import Monitor, MonitorSettings
from scripts.monitor.receipts import main, read_receipts, watch
from scripts.monitor.store import Store
from tests.monitor.conftest import World, reader_of
from tests.scripts.support import chain_now, h


def tree(count: int) -> merkle.MemoryTree:
    built = merkle.MemoryTree()
    for n in range(count):
        built.append(merkle.leaf_hash(h(f"event {n}")))
    return built


def promised(n: int, anchor_by: int = 1000) -> PromisedLeaf:
    return PromisedLeaf(h(f"id {n}"), h(f"event {n}"), n, anchor_by)


def test_a_receipt_kept_is_silent() -> None:
    log = tree(8)
    proof = log.inclusion_proof(3, 8)
    assert receipt_findings(promised(3), (8, log.root(8)), proof, now=5000) == []


def test_another_event_at_the_promised_leaf_is_replaced() -> None:
    log = tree(8)
    other = dataclasses.replace(promised(3), event_digest=h("another"))
    (finding,) = receipt_findings(other, (8, log.root(8)), log.inclusion_proof(3, 8), now=0)
    assert finding.code == ReceiptCode.RECEIPT_REPLACED
    assert finding.severity == "error"
    assert "does not verify" in finding.detail
    (missing,) = receipt_findings(promised(3), (8, log.root(8)), None, now=0)
    assert "no inclusion proof" in missing.detail


def test_a_receipt_not_anchored_by_its_promise_is_dropped() -> None:
    log = tree(4)
    assert receipt_findings(promised(5, anchor_by=1000), (4, log.root(4)), None, now=1000) == []
    (finding,) = receipt_findings(promised(5, anchor_by=1000), (4, log.root(4)), None, now=1001)
    assert finding.code == ReceiptCode.RECEIPT_DROPPED
    (before_any,) = receipt_findings(promised(0, anchor_by=10), None, None, now=11)
    assert before_any.context["checkpointSize"] is None


def test_the_watch_against_a_real_ledger(world: World, api: ApiClient, tmp_path: Path) -> None:
    env = world.env
    signed = env.hospital.sign(
        env.hospital.access(world.story.record, env.patient.address, occurredAt=chain_now(env))
    )
    (pending,) = env.ledger.submit([signed])  # not anchored yet
    path = tmp_path / "receipts.json"
    kept = {
        "eventId": "0x" + world.story.events[0].event_id.hex(),
        "eventDigest": "0x" + world.story.events[0].digest(env.ledger.domain).hex(),
        "leafIndex": 0,
        "anchorBy": 0,
    }
    replaced = {**kept, "leafIndex": 1}
    path.write_text(json.dumps({"receipts": [kept, replaced, pending.to_json()]}))
    receipts = read_receipts(path)
    reader = reader_of(env)
    findings = watch(receipts, api, reader, now=pending.anchor_by)
    assert [(f.code, f.context["leafIndex"]) for f in findings] == [
        (ReceiptCode.RECEIPT_REPLACED, 1)
    ]
    late = watch(receipts, api, reader, now=pending.anchor_by + 1)
    assert [(f.code, f.context["leafIndex"]) for f in late] == [
        (ReceiptCode.RECEIPT_REPLACED, 1),
        (ReceiptCode.RECEIPT_DROPPED, pending.leaf_index),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"nothing": 1}', "no list of receipts"),
        ('[{"eventId": "0x12"}]', "is not a receipt"),
    ],
)
def test_unreadable_receipts_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "receipts.json"
    path.write_text(text)
    with pytest.raises(ToolError, match=message):
        read_receipts(path)
    result = CliRunner().invoke(main, [str(path), "--api", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert message in result.output


def _batch_receipts(world: World) -> list[dict[str, Any]]:
    """Two fresh receipts of one batch, as POST /v1/events served them."""
    env = world.env
    now = chain_now(env)
    signed = [
        env.hospital.sign(
            env.hospital.access(world.story.record, env.patient.address, occurredAt=now)
        )
        for _ in range(2)
    ]
    return [receipt.to_json() for receipt in env.ledger.submit(signed)]


def _forge_path(receipt: dict[str, Any], world: World) -> None:
    receipt["batch"]["path"][0] = "0x" + h("forged").hex()


def _move(receipt: dict[str, Any], world: World) -> None:
    # The same event's receipt claimed for a batch of other leaves, signed by the operator.
    receipt["batch"]["firstLeaf"] -= 1
    receipt["batch"]["count"] += 1


def _tamper(receipt: dict[str, Any], world: World) -> None:
    receipt["receivedAt"] += 1


def _wrong_signer(receipt: dict[str, Any], world: World) -> None:
    batch = receipt["batch"]
    digest = receipt_batch_digest(
        world.env.ledger.domain,
        batch["firstLeaf"],
        batch["count"],
        receipt["receivedAt"],
        receipt["anchorBy"],
        bytes.fromhex(batch["root"][2:]),
    )
    receipt["signature"] = "0x" + sign_digest(digest, h("a stranger's key")).hex()


@pytest.mark.parametrize(
    "spoil",
    [_forge_path, _move, _tamper, _wrong_signer],
    ids=["forged-path", "moved-to-another-batch", "tampered-field", "wrong-signer"],
)
def test_a_spoiled_batch_receipt_is_invalid(
    world: World, api: ApiClient, tmp_path: Path, spoil: Callable[[dict[str, Any], World], None]
) -> None:
    good, spoiled = _batch_receipts(world)
    assert good["batch"]["count"] == 2
    assert good["signature"] == spoiled["signature"]
    spoil(spoiled, world)
    path = tmp_path / "receipts.json"
    path.write_text(json.dumps({"receipts": [good, spoiled]}))
    reader = reader_of(world.env)
    findings = watch(read_receipts(path), api, reader, now=good["receivedAt"])
    assert [(f.code, f.context["leafIndex"]) for f in findings] == [
        (FindingCode.RECEIPT_INVALID, spoiled["leafIndex"])
    ]


def test_a_receipt_signed_alone_still_verifies(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    # Receipts issued before batch receipts: the operator's Receipt signature, no batch.
    good, _ = _batch_receipts(world)
    env = world.env
    digest = receipt_digest(
        env.ledger.domain,
        bytes.fromhex(good["eventDigest"][2:]),
        good["leafIndex"],
        good["receivedAt"],
        good["anchorBy"],
    )
    alone = {k: v for k, v in good.items() if k != "batch"}
    alone["signature"] = "0x" + sign_digest(digest, env.ledger.operator.key).hex()
    path = tmp_path / "receipts.json"
    path.write_text(json.dumps([alone]))
    assert watch(read_receipts(path), api, reader_of(env), now=good["receivedAt"]) == []
    alone["leafIndex"] += 1  # signed for another leaf
    path.write_text(json.dumps([alone]))
    (finding,) = watch(read_receipts(path), api, reader_of(env), now=good["receivedAt"])
    assert finding.code == FindingCode.RECEIPT_INVALID


def test_the_monitor_watches_receipts_in_its_loop_and_fetches_a_kept_one_once(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    """``medtrail-monitor --receipts``: a receipt kept is proven once and not fetched again; one
    replaced is a finding, alerted once however many steps see it."""
    env = world.env
    kept = PromisedLeaf(
        world.story.events[0].event_id, world.story.events[0].digest(env.ledger.domain), 0, 0
    )
    replaced = dataclasses.replace(kept, leaf_index=1)
    monitor = Monitor(
        Store(tmp_path / "m.db"),
        api,
        reader_of(env),
        RuleSet(builtin_rules()),
        MonitorSettings(recheck=0),
        receipts=[kept, replaced],
    )
    proofs: list[int] = []
    get = api.get

    def counting(path: str, params: Any = None) -> Any:
        if path == "/v1/log/inclusion":
            proofs.append(int(params["leafIndex"]))
        return get(path, params)

    api.get = counting  # type: ignore[method-assign]
    first = monitor.step()
    second = monitor.step()
    assert sorted(proofs) == [0, 1, 1]  # the kept receipt's proof fetched once
    broken = [f.finding for f in monitor.store.findings() if f.finding.severity == "error"]
    assert [(f.code, f.context["leafIndex"]) for f in broken] == [(ReceiptCode.RECEIPT_REPLACED, 1)]
    assert first.alerts == 2  # the story's emergency access, and the replaced receipt
    assert second.alerts == 0


def test_unreadable_receipts_stop_the_monitor_before_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "receipts.json"
    path.write_text("not json")
    result = CliRunner().invoke(
        monitor_main,
        [
            *("--api", "http://127.0.0.1:9", "--rpc-url", "http://127.0.0.1:9"),
            *("--console", "off", "--state", str(tmp_path / "m.db"), "--receipts", str(path)),
        ],
    )
    assert result.exit_code == 2
    assert "not JSON" in result.output
    assert "Traceback" not in result.output
