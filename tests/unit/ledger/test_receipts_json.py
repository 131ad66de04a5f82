"""ledger.ingest.receipts_json: the answer of POST /v1/events written directly is the JSON of
each receipt's to_json, for batch receipts, receipts signed alone and duplicates alike."""

from __future__ import annotations

import hashlib
import json

from ledger import merkle
from ledger.ingest import BatchPlace, Receipt, receipts_json


def _h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def test_receipts_json_is_the_json_of_each_receipt() -> None:
    root, paths = merkle.batch_proofs([merkle.leaf_hash(_h(f"leaf {i}")) for i in range(5)])
    signature = bytes(range(65))
    receipts = [
        Receipt(
            _h(f"id {i}"),
            _h(f"digest {i}"),
            10 + i,
            1_700_000_000,
            1_700_003_600,
            signature,
            "custodian",
            batch=BatchPlace(10, 5, root, tuple(path)),
        )
        for i, path in enumerate(paths)
    ]
    receipts.append(  # a batch of one: an empty path
        Receipt(
            _h("alone in its batch"),
            _h("digest of one"),
            20,
            1_700_000_100,
            1_700_003_700,
            signature,
            "custodian",
            batch=BatchPlace(20, 1, _h("root of one"), ()),
        )
    )
    receipts.append(  # nodes not all of 32 bytes: each still rendered as it is
        Receipt(
            _h("odd path"),
            _h("odd digest"),
            21,
            1_700_000_100,
            1_700_003_700,
            signature,
            "custodian",
            batch=BatchPlace(21, 3, _h("odd root"), (b"\x01" * 31, _h("n"))),
        )
    )
    receipts.append(  # sizes that add up to 32 each: still each as it is
        Receipt(
            _h("odd path 2"),
            _h("odd digest 2"),
            22,
            1_700_000_100,
            1_700_003_700,
            signature,
            "custodian",
            batch=BatchPlace(22, 3, _h("odd root"), (b"\x01" * 31, b"\x02" * 33, b"")),
        )
    )
    receipts.append(
        Receipt(
            _h("old"),
            _h("old digest"),
            3,
            1,
            2,
            bytes(65),
            'not-covered:"odd"\u00e9',
            duplicate=True,
        )
    )
    body = receipts_json(receipts)
    assert json.loads(body) == {"receipts": [r.to_json() for r in receipts]}
    assert (
        body
        == json.dumps(
            {"receipts": [r.to_json() for r in receipts]}, separators=(",", ":"), ensure_ascii=True
        ).encode()
    )
