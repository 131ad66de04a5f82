"""A hospital's first event, end to end, over HTTP (the README's walkthrough).

    export MEDTRAIL_URL=http://127.0.0.1:8000 MEDTRAIL_API_KEY=mtk_…
    .venv/bin/python docs/examples/hospital_quickstart.py

With a regulator's key it registers a new hospital on chain and issues the hospital an API
key; the hospital signs RecordAccess events with eth-account from the typed data the service
serves (any EIP-712 library would do), submits them, waits until their checkpoint is
confirmed on chain, prints a proof bundle, and reads the record's trail back page after page
(every list of the API is paged: follow the `Link: rel="next"` header, or `next`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

import httpx
from eth_account import Account

url = os.environ.get("MEDTRAIL_URL", "http://127.0.0.1:8000")
regulator = httpx.Client(
    base_url=url, headers={"Authorization": f"Bearer {os.environ['MEDTRAIL_API_KEY']}"}
)

# 1. The regulator registers the hospital's signing key and gives it an API key.
hospital = Account.create()
regulator.post(
    "/v1/institutions",
    json={"address": hospital.address, "kind": "hospital", "name": "General Hospital"},
).raise_for_status()
key = regulator.post(
    "/v1/api-keys",
    json={"role": "institution", "institution": hospital.address, "label": "ehr-gateway"},
).json()["key"]
api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})

# 2. The hospital signs what happened. Local ids never leave the hospital: only keyed hashes.
secret = os.urandom(32)  # the hospital's own reference key, kept by the hospital


def ref(local_id: str) -> str:
    return "0x" + hmac.new(secret, local_id.encode(), hashlib.sha256).hexdigest()


patient = Account.create().address  # the patient's wallet address
typed = api.get("/v1/typed-data").json()


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
    signature = Account.sign_typed_data(hospital.key, full_message=message).signature
    return {"type": "RecordAccess", "event": event, "signature": "0x" + signature.hex()}


batch = [signed_access(action) for action in (0, 1, 2)]
event = batch[0]["event"]
assert isinstance(event, dict)

# 3. Submit them (a batch is all-or-nothing): one receipt each, signed by the operator.
answer = api.post("/v1/events", json={"events": batch})
answer.raise_for_status()
receipt = answer.json()["receipts"][0]
print(f"logged at leaf {receipt['leafIndex']}, to be anchored by {receipt['anchorBy']}")

# 4. Wait for the checkpoint that holds it to be confirmed on chain, then fetch its proof.
for _ in range(120):
    view = api.get(f"/v1/events/{event['eventId']}").json()
    if view["status"] == "confirmed":
        break
    time.sleep(0.5)
bundle = view["bundle"]
print(f"status {view['status']}: checkpoint {bundle['checkpoint']}")
print(f"inclusion path ({len(bundle['inclusionPath'])} hashes): {bundle['inclusionPath']}")

# 5. Read the record's trail back. Every list is paged (at most 1000 items a page): follow
#    the `Link: <…>; rel="next"` header (or the body's `next`) until there is none.
trail: list[dict[str, object]] = []
page_url: str | None = f"/v1/records/{event['recordRef']}/trail?limit=2"
while page_url is not None:
    page = api.get(page_url)
    page.raise_for_status()
    trail += page.json()["events"]
    page_url = page.links.get("next", {}).get("url")
print(f"the record's trail: {len(trail)} events, {[e['eventId'] for e in trail]}")
