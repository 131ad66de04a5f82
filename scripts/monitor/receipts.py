"""``medtrail-watch-receipts``: an institution's watch over its own receipts.

Given the receipts the operator returned for an institution's events (``POST /v1/events``'s
answer, kept as it was served), check each against the chain's latest checkpoint: an event
the checkpoint covers must be provable at its promised leaf (the operator's public inclusion
proof, verified against the on-chain root: ``receipt-replaced`` otherwise), and every event
must be covered by its promised ``anchorBy`` (``receipt-dropped``). A receipt that carries the
operator's signature is checked first (``receipt-invalid``): through its path to its batch's
signed root, or alone (receipts issued before batch receipts), by a holder of the AuditLog's
operator role. Run it from cron; the exit status says 0 (all kept), 1 (a promise broken) or 2
(could not check).
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from ledger.chain.reader import ChainReader
from ledger.eip712 import recover
from ledger.errors import ProofError, SignatureError
from ledger.supervision import PromisedLeaf, receipt_findings
from ledger.verify import BundleReceipt, Finding, FindingCode, signed_receipt_digest
from ledger.wire import InclusionOut
from scripts._api import ApiClient, ApiError
from scripts._common import (
    EXIT_STATUS_HELP,
    ChainOptions,
    OutputFormat,
    Report,
    ToolError,
    chain_options,
    chain_summary,
    emit,
    guarded,
)

__all__ = ["SignedPromise", "main", "read_receipts", "signature_findings", "watch"]


@dataclass(frozen=True)
class SignedPromise(PromisedLeaf):
    """A promised leaf with the operator's signature over it, as ``POST /v1/events`` served."""

    signed: BundleReceipt | None = None


def read_receipts(path: Path) -> list[PromisedLeaf]:
    """The receipts in ``path``: a JSON list, or an object with a ``receipts`` list (the
    answer of ``POST /v1/events``), or several such documents, one a line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror}") from exc
    documents: list[Any] = []
    try:
        documents = [json.loads(text)]
    except ValueError:
        try:
            documents = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise ToolError(f"{path} is not JSON (nor JSON lines): {exc}") from exc
    promised: list[PromisedLeaf] = []
    for document in documents:
        items = document.get("receipts") if isinstance(document, dict) else document
        if not isinstance(items, list):
            raise ToolError(f"{path} holds no list of receipts")
        for n, item in enumerate(items):
            try:
                signed = None
                if isinstance(item, dict) and "signature" in item:
                    fields = ("receivedAt", "anchorBy", "signature", "batch")
                    signed = BundleReceipt.model_validate({k: item.get(k) for k in fields})
                promised.append(
                    SignedPromise(
                        bytes.fromhex(str(item["eventId"]).removeprefix("0x")),
                        bytes.fromhex(str(item["eventDigest"]).removeprefix("0x")),
                        int(item["leafIndex"]),
                        int(item["anchorBy"]),
                        signed,
                    )
                )
            except (KeyError, TypeError, ValueError, ValidationError) as exc:
                raise ToolError(
                    f"receipt {n} of {path} is not a receipt (eventId, eventDigest, leafIndex, "
                    f"anchorBy): {exc!r}"
                ) from exc
    return promised


def signature_findings(
    receipt: PromisedLeaf, signed: BundleReceipt, reader: ChainReader
) -> list[Finding]:
    """``receipt-invalid`` unless ``signed`` is an operator's signature over this event at
    this leaf and these times (through its batch's root when it has a path)."""
    context: dict[str, Any] = {"leafIndex": receipt.leaf_index}
    try:
        signer = recover(
            signed_receipt_digest(
                reader.domain,
                receipt.event_digest,
                receipt.leaf_index,
                signed.receivedAt,
                signed.anchorBy,
                signed.batch,
            ),
            signed.signature,
        )
    except (ProofError, SignatureError) as exc:
        detail = f"the receipt is invalid: {exc.detail}"
    else:
        if reader.is_log_operator(signer):
            return []
        detail = (
            f"the receipt for this event at leaf {receipt.leaf_index} is not signed by the "
            f"log operator (it recovers to {signer})"
        )
        context["signer"] = signer
    return [Finding(FindingCode.RECEIPT_INVALID, "error", detail, receipt.event_id, context)]


def watch(
    receipts: list[PromisedLeaf], api: ApiClient, reader: ChainReader, now: int
) -> list[Finding]:
    """Every broken promise among ``receipts`` (the chain's latest checkpoint, the API's
    inclusion proofs), and every receipt whose signature is not an operator's."""
    latest = reader.latest_checkpoint()
    checkpoint = None if latest is None else (latest.tree_size, bytes(latest.root_hash))
    findings: list[Finding] = []
    for receipt in receipts:
        if isinstance(receipt, SignedPromise) and receipt.signed is not None:
            findings += signature_findings(receipt, receipt.signed, reader)
        proof = None
        if checkpoint is not None and checkpoint[0] > receipt.leaf_index:
            try:
                data = api.get(
                    "/v1/log/inclusion",
                    {"leafIndex": receipt.leaf_index, "treeSize": checkpoint[0]},
                )
                proof = InclusionOut.model_validate(data).proof
            except (ApiError, ValueError):
                proof = None  # no proof: the finding says so
        findings += receipt_findings(receipt, checkpoint, proof, now)
    return findings


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_STATUS_HELP,
)
@click.argument("receipts_path", metavar="RECEIPTS", type=click.Path(path_type=Path))
@click.option(
    "--api",
    "api_url",
    envvar="MEDTRAIL_API_URL",
    metavar="URL",
    required=True,
    help="The ledger API (its public inclusion proofs) [env MEDTRAIL_API_URL].",
)
@chain_options
@click.option("--json", "output", flag_value="json", help="Print the report as JSON.")
@click.option("--table", "output", flag_value="table", default=True, help="A table (default).")
@click.pass_context
@guarded
def main(
    ctx: click.Context,
    receipts_path: Path,
    api_url: str,
    chain: ChainOptions,
    output: OutputFormat,
) -> None:
    """Check an institution's receipts: each event at its promised leaf, anchored in time."""
    receipts = read_receipts(receipts_path)
    now = int(time.time())
    with ExitStack() as stack:
        view = stack.enter_context(chain.connect())
        api = stack.enter_context(ApiClient(api_url))
        findings = watch(receipts, api, view.reader, now)
        info = chain_summary(view)
    report = Report(
        tool="watch_receipts",
        subject={"receipts": str(receipts_path), "count": len(receipts)},
        chain=info,
        events=[],
        findings=findings,
        stats={"events": len(receipts)},
        checked_at=now,
    )
    emit(report, output)
    ctx.exit(report.exit_status)


if __name__ == "__main__":  # pragma: no cover - the command line
    main()
