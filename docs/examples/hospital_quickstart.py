"""A hospital's first event, end to end, over HTTP (the README's walkthrough).

    export MEDTRAIL_URL=http://127.0.0.1:8000 MEDTRAIL_API_KEY=mtk_…   # a regulator's key
    .venv/bin/python docs/examples/hospital_quickstart.py

With a regulator's key it registers a new hospital on chain and issues the hospital an API
key; the hospital signs RecordAccess events with eth-account from the typed data the service
serves (any EIP-712 library would do), submits them, waits until their checkpoint is
confirmed on chain (at most QUICKSTART_TIMEOUT seconds, default 120), prints a proof bundle,
and reads the record's trail back page after page (every list of the API is paged: follow the
`Link: rel="next"` header, or `next`).

It exits 0 once the proof is confirmed; otherwise it says what went wrong and exits non-zero:
1 when the service answered an error or the proof was not confirmed in time, 2 when it was
started wrong (no key, a key that is not a regulator's, no service at MEDTRAIL_URL).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
import time
from typing import NoReturn

import httpx
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak


def fail(message: str, status: int = 1) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def checked(answer: httpx.Response, what: str) -> httpx.Response:
    """``answer`` if it succeeded; else one line naming the step and the service's problem."""
    if answer.is_success:
        return answer
    try:
        problem = answer.json()
        why = f"{problem.get('detail')} [{problem.get('code')}]"
    except ValueError:
        why = answer.text[:200]
    fail(f"{what}: the service answered {answer.status_code}: {why}")


url = os.environ.get("MEDTRAIL_URL", "http://127.0.0.1:8000")
token = os.environ.get("MEDTRAIL_API_KEY", "").strip()
if not token:
    fail(
        "MEDTRAIL_API_KEY is not set: export a regulator's API key (`medtrail serve` prints one "
        "in embedded mode; `medtrail api-key create --label regulator` makes one otherwise)",
        2,
    )
timeout = float(os.environ.get("QUICKSTART_TIMEOUT", "120"))
regulator = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

# 0. Who is this key? (A regulator registers institutions; an institution's key cannot.)
try:
    whoami = regulator.get("/v1/auth/whoami")
except httpx.HTTPError as exc:
    fail(f"no medtrail service answers at {url} ({type(exc).__name__}): is it running?", 2)
if whoami.status_code == 401:
    fail(f"MEDTRAIL_API_KEY is not a key this service at {url} knows (401)", 2)
role = checked(whoami, "reading who the key is").json()["role"]
if role != "regulator":
    article = "an" if role[:1] in ("a", "e", "i", "o", "u") else "a"
    fail(
        f"MEDTRAIL_API_KEY is {article} {role}'s key: this walkthrough registers a hospital, "
        "which takes a regulator's key",
        2,
    )

# 1. The regulator registers the hospital's signing key and gives it an API key.
hospital = Account.create()
checked(
    regulator.post(
        "/v1/institutions",
        json={"address": hospital.address, "kind": "hospital", "name": "General Hospital"},
    ),
    "registering the hospital",
)
key = checked(
    regulator.post(
        "/v1/api-keys",
        json={"role": "institution", "institution": hospital.address, "label": "ehr-gateway"},
    ),
    "issuing the hospital's API key",
).json()["key"]
api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

# 2. The hospital signs what happened. Local ids never leave the hospital: only keyed hashes.
secret = os.urandom(32)  # the hospital's own reference key, kept by the hospital


def ref(local_id: str) -> str:
    return "0x" + hmac.new(secret, local_id.encode(), hashlib.sha256).hexdigest()


patient = Account.create().address  # the patient's wallet address
typed = checked(api.get("/v1/typed-data"), "reading the typed data").json()


def signed_access(action: int) -> dict[str, object]:
    """A RecordAccess by Dr Lee to the patient's record, signed by the hospital."""
    event = {
        "eventId": "0x" + os.urandom(32).hex(),
        "recordRef": ref("MRN-000123"),
        "custodian": hospital.address,
        "patient": patient,
        "institution": hospital.address,
        "actor": ref("staff:dr-lee"),
        "action": action,  # 0 create, 1 read, 2 write (see the typed data's "enums")
        "purpose": 0,  # treatment
        "grantId": 0,
        "reasonHash": "0x" + "00" * 32,
        "occurredAt": int(time.time()),
    }
    message = {
        "types": {
            "EIP712Domain": typed["types"]["EIP712Domain"],
            "RecordAccess": typed["types"]["RecordAccess"],
        },
        "primaryType": "RecordAccess",
        "domain": typed["domains"]["auditLog"],
        "message": event,
    }
    signed = Account.sign_typed_data(hospital.key, full_message=message)
    digests.append("0x" + signed.message_hash.hex())  # the event's EIP-712 digest
    return {"type": "RecordAccess", "event": event, "signature": "0x" + signed.signature.hex()}


def receipt_signer(receipt: dict[str, object], event_digest: str) -> str:
    """Who signed ``receipt`` for the event of ``event_digest`` (docs/wire.md "Receipts"):
    the event's receipt leaf, through its path, to the root the operator signed for the batch."""
    batch = receipt["batch"]
    assert isinstance(batch, dict), "a receipt of this release carries its batch"
    words = [bytes.fromhex(event_digest[2:])] + [
        int(str(receipt[name])).to_bytes(32, "big")
        for name in ("leafIndex", "receivedAt", "anchorBy")
    ]
    type_hash = keccak(
        text="Receipt(bytes32 eventDigest,uint64 leafIndex,uint64 receivedAt,uint64 anchorBy)"
    )
    node = hashlib.sha256(b"\x00" + keccak(type_hash + b"".join(words))).digest()
    # RFC 9162 section 2.1.3.2: fold the path from the leaf's position up to the root.
    index, last = int(str(receipt["leafIndex"])) - batch["firstLeaf"], batch["count"] - 1
    for sibling in (bytes.fromhex(h[2:]) for h in batch["path"]):
        if index % 2 or index == last:
            node = hashlib.sha256(b"\x01" + sibling + node).digest()
            while index % 2 == 0 and index:
                index, last = index >> 1, last >> 1
        else:
            node = hashlib.sha256(b"\x01" + node + sibling).digest()
        index, last = index >> 1, last >> 1
    if last != 0 or "0x" + node.hex() != batch["root"]:
        fail(f"the receipt of leaf {receipt['leafIndex']}: its path does not lead to its root")
    signed_batch = {
        "types": {
            "EIP712Domain": typed["types"]["EIP712Domain"],
            "ReceiptBatch": typed["types"]["ReceiptBatch"],
        },
        "primaryType": "ReceiptBatch",
        "domain": typed["domains"]["auditLog"],
        "message": {
            "firstLeaf": batch["firstLeaf"],
            "count": batch["count"],
            "receivedAt": receipt["receivedAt"],
            "anchorBy": receipt["anchorBy"],
            "root": batch["root"],
        },
    }
    return str(
        Account.recover_message(
            encode_typed_data(full_message=signed_batch), signature=str(receipt["signature"])
        )
    )


digests: list[str] = []
batch = [signed_access(action) for action in (0, 1, 2)]
event = batch[0]["event"]
assert isinstance(event, dict)

# 3. Submit them (a batch is all-or-nothing): one receipt each, and one operator signature for
#    the batch. Check each receipt is for our own event, and who signed it (a hospital compares
#    the signer with the operator address its deployment gave it).
answer = checked(api.post("/v1/events", json={"events": batch}), "submitting the events")
receipts = answer.json()["receipts"]
signers = set()
for receipt, own_digest in zip(receipts, digests, strict=True):
    if receipt["eventDigest"] != own_digest:
        fail(f"the receipt of leaf {receipt['leafIndex']} is for another event")
    signers.add(receipt_signer(receipt, own_digest))
receipt = receipts[0]
print(f"logged at leaf {receipt['leafIndex']}, to be anchored by {receipt['anchorBy']}")
print(f"the receipts' batch of {receipt['batch']['count']} is signed by {', '.join(signers)}")

# 4. Wait for the checkpoint that holds it to be confirmed on chain, then fetch its proof.
deadline = time.monotonic() + timeout
while True:
    view = checked(api.get(f"/v1/events/{event['eventId']}"), "reading the event").json()
    if view["status"] == "confirmed":
        break
    if time.monotonic() > deadline:
        fail(
            f"timed out after {timeout:g} s: the event is still {view['status']!r}, not "
            "confirmed. A checkpoint is confirmed once blocks follow its own: is the node "
            "mining? (anvil mines only when a transaction arrives: run it with --block-time 1, "
            "as `make anvil` does.) Set QUICKSTART_TIMEOUT to wait longer."
        )
    time.sleep(0.5)
bundle = view["bundle"]
print(f"status {view['status']}: checkpoint {bundle['checkpoint']}")
print(f"inclusion path ({len(bundle['inclusionPath'])} hashes): {bundle['inclusionPath']}")

# 5. Read the record's trail back. Every list is paged (at most 1000 items a page): follow
#    the `Link: <…>; rel="next"` header (or the body's `next`) until there is none.
trail: list[dict[str, object]] = []
page_url: str | None = f"/v1/records/{event['recordRef']}/trail?limit=2"
while page_url is not None:
    page = checked(api.get(page_url), "reading the trail")
    trail += page.json()["events"]
    page_url = page.links.get("next", {}).get("url")
print(f"the record's trail: {len(trail)} events, {[e['eventId'] for e in trail]}")
