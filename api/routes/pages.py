"""The landing page (``/``), the patient's page (``/patient``) and the API docs (``/docs``), for
browsers (:mod:`api.pages`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.deps import Ctx
from api.pages import (
    ServiceFacts,
    docs_page,
    landing_page,
    patient_page,
    patient_page_policy,
)
from ledger.redact import url_origin

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, ctx: Ctx) -> HTMLResponse:
    """What runs where, and how each actor starts."""
    ledger = ctx.ledger
    deployment = ledger.deployment
    anchored, confirmed = ledger.anchor_state()
    settings = ledger.settings
    chain_at = (
        f"a JSON-RPC node at {url_origin(settings.rpc_url or '')}"
        if settings.mode == "rpc"
        else "in this process (embedded: a new chain at every start)"
    )
    facts = ServiceFacts(
        base_url=str(request.base_url),
        mode=settings.mode,
        chain_id=deployment.chain_id,
        chain_at=chain_at,
        institution_registry=deployment.institution_registry,
        audit_log=deployment.audit_log,
        consent_registry=deployment.consent_registry,
        deployed_at_block=deployment.block_number,
        tree_size=ledger.log.head().size,
        anchored_size=anchored,
        confirmed_size=confirmed,
        trial_rpc_url=getattr(request.app.state, "trial_rpc_url", None),
    )
    return HTMLResponse(landing_page(facts))


@router.get("/docs", response_class=HTMLResponse)
def docs() -> HTMLResponse:
    """Swagger UI, with its assets served from ``/static`` (no CDN)."""
    return docs_page()


@router.get("/patient", response_class=HTMLResponse)
def patient(request: Request) -> HTMLResponse:
    """The patient's page: sign in with a browser wallet, see who saw my records (checked in
    the browser), give and withdraw permissions. Static, but for where the chain can be read."""
    trial_rpc_url = getattr(request.app.state, "trial_rpc_url", None)
    page = patient_page(trial_rpc_url)
    return HTMLResponse(
        page,
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": patient_page_policy(page, trial_rpc_url),
        },
    )
