"""Sign a hospital's RecordAccess and print the body of ``POST /v1/events`` (the README's curl
walkthrough: ``… > signed-events.json``).

    export MEDTRAIL_URL=http://127.0.0.1:8000
    HOSPITAL_SIGNING_KEY=0x… .venv/bin/python docs/examples/sign_events.py > signed-events.json

The key is the hospital's own signing key (the address a regulator registered); the typed data
comes from the service (``GET /v1/typed-data``: public), so the signature is for this
deployment. The record and the staff member are keyed hashes of local ids (``RECORD_ID``,
default ``MRN-000123``), the patient a new address unless ``PATIENT`` names one. Errors are one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from typing import NoReturn

import httpx
from eth_account import Account


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


url = os.environ.get("MEDTRAIL_URL", "http://127.0.0.1:8000")
raw_key = os.environ.get("HOSPITAL_SIGNING_KEY", "").strip()
if not raw_key:
    fail("HOSPITAL_SIGNING_KEY is not set: the hospital's own signing key, 0x-hex")
try:
    hospital = Account.from_key(raw_key)
except (ValueError, TypeError):
    fail("HOSPITAL_SIGNING_KEY is not a private key (32 bytes, 0x-hex)")
try:
    answer = httpx.get(f"{url}/v1/typed-data", timeout=30)
except httpx.HTTPError as exc:
    fail(f"no medtrail service answers at {url} ({type(exc).__name__})")
if not answer.is_success:
    fail(f"GET /v1/typed-data answered {answer.status_code}")
typed = answer.json()
# The hospital's reference key (kept by the hospital): derived from its signing key here, so
# that the same local id always gives the same reference.
secret = hashlib.sha256(b"medtrail-example-refs" + bytes(hospital.key)).digest()


def ref(local_id: str) -> str:
    return "0x" + hmac.new(secret, local_id.encode(), hashlib.sha256).hexdigest()


event = {
    "eventId": "0x" + os.urandom(32).hex(),
    "recordRef": ref(os.environ.get("RECORD_ID", "MRN-000123")),
    "custodian": hospital.address,
    "patient": os.environ.get("PATIENT") or Account.create().address,
    "institution": hospital.address,
    "actor": ref("staff:dr-lee"),
    "action": 1,  # read (see the typed data's "enums")
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
body = {"events": [{"type": "RecordAccess", "event": event, "signature": "0x" + signature.hex()}]}
print(json.dumps(body, indent=2))
