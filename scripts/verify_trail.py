#!/usr/bin/env python3
"""Verify one record's audit trail against the chain, trusting only the chain.

Run from the repository root (medtrail installed in the virtualenv)::

    python scripts/verify_trail.py 0x<recordRef> --api https://ledger.example --rpc-url ...
    python scripts/verify_trail.py 0x<recordRef> --bundle trail.json --rpc-url ...
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from pydantic import ValidationError

from ledger import jsonsafe
from ledger.audit import AuditCode
from ledger.chain.model import Deployment
from ledger.chain.reader import ChainView
from ledger.completeness import CompletenessCode
from ledger.errors import MalformedEventError
from ledger.index import record_key
from ledger.refs import from_hex32
from ledger.trail import FactSource, IndexClaim, TimeWindows, TrailItem, verify_trail
from ledger.verify import Finding, FindingCode
from scripts._api import ApiClient, EventOut, TrailOut
from scripts._common import (
    EXIT_STATUS_HELP,
    ChainOptions,
    EventLine,
    OutputFormat,
    Report,
    ToolError,
    chain_options,
    chain_summary,
    emit,
    guarded,
    hex_,
    institution_names,
    max_backdate_option,
    max_merge_delay_option,
    output_options,
)
from scripts._consent import consent_facts, grants_option


def load_bundle_file(path: Path) -> TrailOut:
    """An exported trail: the JSON of ``GET /v1/records/{ref}/trail`` (or a list of its
    events, or one event)."""
    try:
        data: Any = jsonsafe.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolError(f"cannot read the bundle file {path}: {exc}") from exc
    except ValueError as exc:
        raise ToolError(f"the bundle file {path} is not JSON: {exc}") from exc
    try:
        if isinstance(data, dict) and "events" in data:
            trail = TrailOut.model_validate(data)
            if trail.next is not None:
                raise ToolError(
                    f"{path} holds one page of the trail (it ends with next={trail.next}): "
                    "export every page (?limit=1000, then ?after=<next> until next is null, "
                    "joining the events), or verify from the API (--api)"
                )
            return trail
        items = data if isinstance(data, list) else [data]
        events = [EventOut.model_validate(item) for item in items]
    except ValidationError as exc:
        raise ToolError(f"the bundle file {path} is not a trail export: {exc}") from exc
    if not events or events[0].recordRef is None:
        raise ToolError(f"the bundle file {path} does not say which record it is the trail of")
    return TrailOut(recordRef=events[0].recordRef, events=events)


def verify(
    record_ref: bytes,
    trail: TrailOut,
    chain: ChainView,
    *,
    now: int,
    max_merge_delay: int | None = 3600,
    max_backdate: int | None = 86_400,
    operator: str | None = None,
    served_deployment: Deployment | None = None,
    source: str = "",
    archived: bool = False,
    facts: FactSource | None = None,
) -> Report:
    """Verify ``trail`` (as served or exported) against ``chain``; return the report.
    ``archived``: the trail was exported earlier (a file), so it is judged complete as of its
    index proof's checkpoint (``trail-as-of``, a warning, when the chain has moved on).
    ``facts``: what judges institutions and grants, when not ``chain`` itself (consent
    version 2: :func:`scripts._consent.consent_facts`).

    Nothing in the trail is trusted: :func:`ledger.trail.verify_trail` checks each bundle's
    inclusion proof against the root the chain holds for its size (read here, never taken
    from the bundle), recovers every signature, and replays every rule with the chain's view
    of institutions and grants at each event's ``occurredAt``; and that the trail is whole:
    the index proof served with it against the index root the chain holds, every listed event
    served, at the chain's latest checkpoint (:mod:`ledger.completeness`).
    """
    started = time.perf_counter()
    verified = verify_trail(
        [TrailItem(item.bundle, item.recordRef) for item in trail.events],
        checkpoints=chain,
        facts=chain if facts is None else facts,
        trusted=chain.trusted,
        windows=TimeWindows(now, max_merge_delay, max_backdate),
        operator=operator,
        record_ref=record_ref,
        served_deployment=None if served_deployment is None else served_deployment.trusted(),
        completeness=IndexClaim(
            record_key(record_ref), "the record's trail", trail.index, archived=archived
        ),
    )
    log_findings = list(verified.findings)
    if trail.recordRef != record_ref:
        log_findings.insert(
            0,
            Finding(
                AuditCode.TRAIL_RECORD_MISMATCH,
                "error",
                f"asked for the trail of {hex_(record_ref)}, got the trail of "
                f"{hex_(trail.recordRef)}",
                None,
                {"recordRef": hex_(trail.recordRef)},
            ),
        )
    lines = [
        EventLine(
            event=item.bundle.event.event,
            leaf_index=item.bundle.leafIndex,
            digest=item.bundle.eventDigest,
            signature=item.bundle.event.signature,
            record_ref=item.recordRef,
            consent=item.bundle.consent,
            anchored_in=anchored_in,
            findings=findings,
        )
        for item, findings, anchored_in in zip(
            trail.events, verified.events, verified.anchored_in, strict=True
        )
    ]
    findings = log_findings + [f for line in lines for f in line.findings]
    addresses = {item.bundle.event.institution for item in trail.events}
    chain_info: dict[str, Any] = chain_summary(chain)
    latest = verified.latest
    if latest is not None:
        chain_info["latestCheckpoint"] = {
            "treeSize": latest.tree_size,
            "rootHash": hex_(latest.root_hash),
            "indexRoot": hex_(latest.index_root),
            "block": latest.block_number,
        }
    completeness = (
        "not proven"
        if verified.index_head is None
        else f"{verified.index_head.size} event(s) listed by the index at checkpoint "
        f"{verified.index_size}, list root {hex_(verified.index_head.root)}"
    )
    return Report(
        tool="verify_trail",
        subject={"recordRef": hex_(record_ref), "source": source, "completeness": completeness},
        chain=chain_info,
        events=lines,
        findings=findings,
        stats={
            "events": len(lines),
            "chainFacts": len(verified.needs),
            "chainRoundTrips": chain.round_trips,
            "seconds": round(time.perf_counter() - started, 3),
        },
        names=institution_names(chain, addresses),
        checked_at=now,
    )


def verify_from_api(
    record_ref: bytes,
    api: ApiClient,
    chain: ChainView,
    *,
    now: int,
    max_merge_delay: int | None = 3600,
    max_backdate: int | None = 86_400,
    operator: str | None = None,
    retry_delay: float = 1.0,
    facts: FactSource | None = None,
) -> Report:
    """Fetch the record's trail from the API and :func:`verify` it.

    A bundle served as "not anchored" while the chain already holds a checkpoint covering it
    (``proof-missing``), or a trail proven complete at the checkpoint before the chain's
    latest (``trail-outdated``), is what one sees when the trail was read just before the
    operator recorded a checkpoint that has just landed: the trail is fetched and verified
    once more before that is reported.
    """
    served = api.deployment()
    report = verify(
        record_ref,
        api.trail(record_ref),
        chain,
        now=now,
        max_merge_delay=max_merge_delay,
        max_backdate=max_backdate,
        operator=operator,
        served_deployment=served,
        source=api.base_url,
        facts=facts,
    )
    if report.findings_of(FindingCode.PROOF_MISSING) or report.findings_of(
        CompletenessCode.TRAIL_OUTDATED
    ):
        time.sleep(retry_delay)
        chain.refresh()
        report = verify(
            record_ref,
            api.trail(record_ref),
            chain,
            now=now,
            max_merge_delay=max_merge_delay,
            max_backdate=max_backdate,
            operator=operator,
            served_deployment=served,
            source=api.base_url,
            facts=facts,
        )
    return report


def _record_ref(value: str) -> bytes:
    try:
        return from_hex32(value)
    except MalformedEventError as exc:
        raise click.BadParameter(f"RECORD_REF must be 0x + 64 hex digits: {exc.detail}") from exc


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_STATUS_HELP
    + "MEDTRAIL_MAX_MERGE_DELAY, MEDTRAIL_MAX_BACKDATE, MEDTRAIL_OPERATOR_ADDRESS,\n"
    + "MEDTRAIL_GRANTS_FILE.",
)
@click.argument("record_ref", metavar="RECORD_REF")
@click.option(
    "--api",
    "api_url",
    envvar="MEDTRAIL_API_URL",
    metavar="URL",
    help="Fetch the trail from the ledger API at URL [env MEDTRAIL_API_URL].",
)
@click.option(
    "--api-key",
    envvar="MEDTRAIL_API_KEY",
    metavar="KEY",
    help="Regulator's API key (bearer token) [env MEDTRAIL_API_KEY].",
)
@click.option(
    "--bundle",
    "bundle_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Verify an exported trail file instead (offline: the JSON of the API's trail answer).",
)
@chain_options
@max_merge_delay_option
@max_backdate_option
@click.option(
    "--operator",
    envvar="MEDTRAIL_OPERATOR_ADDRESS",
    metavar="ADDRESS",
    help="Log operator's address: also check every receipt is signed by it.",
)
@grants_option
@output_options
@click.pass_context
@guarded
def main(
    ctx: click.Context,
    record_ref: str,
    api_url: str | None,
    api_key: str | None,
    bundle_file: Path | None,
    chain: ChainOptions,
    max_merge_delay: int,
    max_backdate: int,
    operator: str | None,
    grants_file: Path | None,
    output: OutputFormat,
) -> None:
    """Verify the audit trail of RECORD_REF (0x + 64 hex digits), trusting only the chain.

    The trail comes from the ledger API (--api) or from an exported file (--bundle). Every
    event is checked against YOUR OWN chain endpoint (--rpc-url) at the contracts YOU name
    (--deployment-file, or the three addresses):

    \b
    - proof: included in the root the AuditLog holds for its checkpoint (never the root the
      bundle carries); not anchored past the merge delay;
    - signature: by the event's institution, registered on chain with the right kind at
      occurredAt (not suspended);
    - consent: each access by another institution than the custodian covered by a grant
      valid on chain at occurredAt (consent version 2: its signed grant, from --grants or
      else the API, judged by the ConsentRegistryV2 you trust); emergency accesses listed
      for review;
    - prescriptions and money: dispense without prescription, beyond fills, after
      validUntil; claim without service; double payment; paid above claim.

    - completeness: the index proof served with the trail leads to the index root the
      AuditLog holds for its checkpoint, every event it lists was served, and that
      checkpoint is the chain's latest (trail-incomplete, trail-outdated, index-proof-missing).

    That the index itself was built right is what audit_log.py checks over the whole log.
    """
    ref = _record_ref(record_ref)
    if bundle_file is not None and api_url is not None:
        if ctx.get_parameter_source("api_url") == ParameterSource.COMMANDLINE:
            raise click.UsageError("give either --api or --bundle, not both")
        api_url = None  # an explicit file wins over MEDTRAIL_API_URL
    if bundle_file is None and api_url is None:
        raise click.UsageError("give --api URL (or MEDTRAIL_API_URL) or --bundle FILE")
    spec = chain.spec()  # the contracts named (or a clear error) before anything is read
    now = int(time.time())
    if bundle_file is not None:
        trail = load_bundle_file(bundle_file)
        if trail.recordRef != ref:
            raise ToolError(
                f"{bundle_file} is the trail of {hex_(trail.recordRef)}, not of {record_ref}"
            )
        with chain.connect(spec) as view:
            report = verify(
                ref,
                trail,
                view,
                now=now,
                max_merge_delay=max_merge_delay,
                max_backdate=max_backdate,
                operator=operator,
                source=str(bundle_file),
                archived=True,
                facts=consent_facts(view, grants=grants_file),
            )
    else:
        assert api_url is not None
        with chain.connect(spec) as view, ApiClient(api_url, api_key) as api:
            report = verify_from_api(
                ref,
                api,
                view,
                now=now,
                max_merge_delay=max_merge_delay,
                max_backdate=max_backdate,
                operator=operator,
                facts=consent_facts(view, grants=grants_file, api=api),
            )
    emit(report, output)
    ctx.exit(report.exit_status)


if __name__ == "__main__":  # pragma: no cover - the command line
    main()
