"""A hospital's first event, end to end, over HTTP (the README's walkthrough).

    export MEDTRAIL_URL=http://127.0.0.1:8000 MEDTRAIL_API_KEY=mtk_…
    .venv/bin/python docs/examples/hospital_quickstart.py

With a regulator's key it registers a new hospital on chain and issues the hospital an API
key; the hospital signs a RecordAccess with eth-account from the typed data the service
serves (any EIP-712 library would do), submits it, waits until its checkpoint is confirmed
on chain, and prints the proof bundle.
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
event = {
    "eventId": "0x" + os.urandom(32).hex(),
    "recordRef": ref("MRN-000123"),
    "custodian": hospital.address,
    "patient": patient,
    "institution": hospital.address,
    "actor": ref("staff:dr-lee"),
    "action": 0,  # create (see the typed data's "enums")
    "purpose": 0,  # treatment
    "grantId": 0,
    "reasonHash": "0x" + "00" * 32,
    "occurredAt": int(time.time()),
}
typed = api.get("/v1/typed-data").json()
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

# 3. Submit it: the answer is a receipt signed by the operator.
answer = api.post(
    "/v1/events",
    json={
        "events": [{"type": "RecordAccess", "event": event, "signature": "0x" + signature.hex()}]
    },
)
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
