"""The service's own web pages: the landing page at ``/``, the patient's page at ``/patient``
and the API docs at ``/docs``.

No asset from elsewhere: hospital networks are often offline, so the docs' Swagger UI is
vendored (``api/static/swagger-ui``, see its ``VENDORED.md``) and served under ``/static``, as
is the patient's page (``api/static/patient``: its own scripts, and Keccak-256 from a vendored
@noble/hashes). The landing page is server-rendered, with no script; it says what runs where (mode,
chain, contracts, the log's state, the public endpoints) and how each actor starts. It is
built for people first: one column that fits a phone, text at 4.5:1 contrast or more, a skip
link, visible keyboard focus, headings and tables a screen reader can walk.

:func:`landing_page` is pure: it takes a :class:`ServiceFacts` and returns the page.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

__all__ = [
    "NOBLE_HASHES_VERSION",
    "STATIC_DIR",
    "STATIC_PATH",
    "SWAGGER_UI_VERSION",
    "ServiceFacts",
    "docs_page",
    "landing_page",
    "patient_page",
    "patient_page_policy",
]

#: Where the vendored assets are, on disk and under the service's URL space.
STATIC_DIR: Final = Path(str(files("api") / "static"))
STATIC_PATH: Final = "/static"
#: The vendored swagger-ui-dist (npm), exactly.
SWAGGER_UI_VERSION: Final = "5.35.0"
#: The vendored @noble/hashes (npm), exactly: the patient page's Keccak-256.
NOBLE_HASHES_VERSION: Final = "1.8.0"


@dataclass(frozen=True)
class ServiceFacts:
    """What the landing page shows: public facts only (what ``/v1/deployment`` and the
    chain tell anyone)."""

    base_url: str
    mode: str
    chain_id: int
    chain_at: str
    institution_registry: str
    audit_log: str
    consent_registry: str
    deployed_at_block: int
    tree_size: int
    anchored_size: int
    confirmed_size: int
    trial_rpc_url: str | None = None


_STYLE: Final = """
:root{color-scheme:light;--ink:#1b1f24;--muted:#4a5159;--link:#0b57a4;--line:#c9d1d9;
--panel:#f4f6f8;--focus:#b35900}
*{box-sizing:border-box}
body{margin:0;font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--ink);background:#fff}
a{color:var(--link)}
a:focus-visible,summary:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.skip{position:absolute;left:-9999px}
.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem;z-index:1}
header,main,footer{max-width:60rem;margin:0 auto;padding:1rem}
header{border-bottom:1px solid var(--line)}
h1{font-size:1.6rem;margin:.2rem 0}
h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid var(--line)}
h3{font-size:1.05rem;margin-bottom:.3rem}
.lead{color:var(--muted);margin:.2rem 0 0}
table{border-collapse:collapse;width:100%}
caption{text-align:left;color:var(--muted);padding:.3rem 0}
th,td{text-align:left;vertical-align:top;padding:.4rem .5rem;border-bottom:1px solid var(--line)}
th{width:34%;font-weight:600}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.92em}
td code{overflow-wrap:anywhere}
pre{background:var(--panel);border:1px solid var(--line);padding:.7rem;overflow-x:auto;
white-space:pre-wrap;overflow-wrap:anywhere}
ul.links{padding-left:1.2rem}
.note{background:var(--panel);border-left:4px solid var(--focus);padding:.5rem .8rem}
@media (max-width:40rem){th,td{display:block;width:100%}th{border-bottom:0;padding-bottom:0}}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _row(label: str, value: str) -> str:
    return f'<tr><th scope="row">{_e(label)}</th><td>{value}</td></tr>'


def _code(value: object) -> str:
    return f"<code>{_e(value)}</code>"


def landing_page(facts: ServiceFacts) -> str:
    """The landing page: what runs where, and how each actor starts."""
    base = facts.base_url.rstrip("/")
    anchoring = (
        f"{facts.tree_size} events logged; checkpoint of {facts.anchored_size} on chain, "
        f"{facts.confirmed_size} confirmed"
    )
    chain_rows = [
        _row("Mode", _e(facts.mode)),
        _row("Chain id", _code(facts.chain_id)),
        _row("Chain", _e(facts.chain_at)),
        _row("InstitutionRegistry", _code(facts.institution_registry)),
        _row("AuditLog", _code(facts.audit_log)),
        _row("ConsentRegistry", _code(facts.consent_registry)),
        _row("Deployed at block", _code(facts.deployed_at_block)),
        _row("Log", _e(anchoring)),
    ]
    if facts.trial_rpc_url:
        chain_rows.append(
            _row(
                "Chain JSON-RPC (for trying only)",
                f"{_code(facts.trial_rpc_url)} — read-only, on this machine only",
            )
        )
    endpoints = [
        ("/docs", "API docs (Swagger UI): every operation, its parameters and answers"),
        ("/openapi.json", "the OpenAPI document"),
        ("/problems", "the problems catalogue: every error code and what it means"),
        ("/healthz", "health: the process is up"),
        ("/readyz", "readiness: the store, the chain and the anchoring role answer"),
        ("/metrics", "Prometheus metrics"),
        ("/v1/deployment", "chain id and contract addresses, as JSON"),
        ("/v1/typed-data", "EIP-712 definitions to sign events and grants"),
        ("/v1/checkpoints", "the checkpoints and their anchoring"),
    ]
    links = "".join(
        f'<li><a href="{_e(path)}">{_e(path)}</a> — {_e(text)}</li>' for path, text in endpoints
    )
    rpc_for_tools = facts.trial_rpc_url or "http://<your own node>:8545"
    regulator_rpc_note = (
        "<p class='note'>The chain JSON-RPC above is served by this service for trying the "
        "tools only. In earnest, a regulator reads the chain through a node of their own: "
        "the tools trust nothing the operator serves.</p>"
        if facts.trial_rpc_url
        else "<p>Point the tools at a JSON-RPC node of your own on this chain: they trust "
        "nothing the operator serves.</p>"
    )
    institution = (
        f"export MEDTRAIL_URL={base} MEDTRAIL_API_KEY=mtk_…   # a regulator's key\n"
        ".venv/bin/python docs/examples/hospital_quickstart.py"
    )
    patient = (
        f"export MEDTRAIL_API_URL={base}\n"
        ".venv/bin/medtrail wallet create     # write down the 12 words\n"
        ".venv/bin/medtrail wallet grant --to 0xInstitution… --record 0xRecordRef… "
        "--purpose treatment --days 30\n"
        ".venv/bin/medtrail wallet accesses"
    )
    regulator = (
        f"curl -s {base}/v1/deployment > deployment.json\n"
        f"export MEDTRAIL_API_URL={base} MEDTRAIL_API_KEY=mtk_…\n"
        f"export MEDTRAIL_RPC_URL={rpc_for_tools} MEDTRAIL_DEPLOYMENT_FILE=deployment.json\n"
        ".venv/bin/python scripts/verify_trail.py 0x<recordRef>\n"
        ".venv/bin/python scripts/audit_log.py --mirror log.mirror --state audit.state"
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>medtrail — {_e(facts.mode)} mode, chain {_e(facts.chain_id)}</title>
<link rel="icon" href="{STATIC_PATH}/swagger-ui/favicon-32x32.png">
<style>{_STYLE}</style>
</head>
<body>
<a class="skip" href="#main">Skip to the content</a>
<header>
<h1>medtrail</h1>
<p class="lead">A tamper-evident, chain-anchored audit trail for health data: institutions
submit signed events, the log is anchored on chain, patients grant consent from their own
wallet, regulators verify against the chain.</p>
</header>
<main id="main">
<section aria-labelledby="where">
<h2 id="where">What runs where</h2>
<table>
<caption>This service and the chain it anchors on</caption>
<tbody>{"".join(chain_rows)}</tbody>
</table>
</section>
<section aria-labelledby="endpoints">
<h2 id="endpoints">Endpoints</h2>
<ul class="links">{links}</ul>
<p>Everything under <code>/v1</code> but the public reads takes
<code>Authorization: Bearer &lt;key or session token&gt;</code>; every error is an RFC 9457
problem document whose <code>type</code> is described under
<a href="/problems">/problems</a>, and every answer carries an <code>X-Request-ID</code> to
quote when you report one.</p>
</section>
<section aria-labelledby="start">
<h2 id="start">How each actor starts</h2>
<h3 id="institution">Institution (hospital, pharmacy, insurer)</h3>
<p>A regulator registers your signing address on chain and issues you an API key; you sign
events with any EIP-712 library and post them to <code>POST /v1/events</code>. The
walkthrough, from a regulator's key to a confirmed proof:</p>
<pre aria-labelledby="institution">{_e(institution)}</pre>
<h3 id="patient">Patient</h3>
<p>With a browser wallet (MetaMask or the like): <a href="/patient">your page</a> — sign in,
see who saw your records with the proofs checked in your browser, give and withdraw
permissions. Or from the terminal: your key stays on your computer; the service relays the
consent you sign, so you need no ether.</p>
<pre aria-labelledby="patient">{_e(patient)}</pre>
<h3 id="regulator">Regulator</h3>
<p>The tools verify a record's trail, or the whole log, against the chain.</p>
{regulator_rpc_note}
<pre aria-labelledby="regulator">{_e(regulator)}</pre>
</section>
</main>
<footer><p class="lead">medtrail · <a href="/docs">API docs</a> ·
<a href="/problems">problems</a> · <a href="/readyz">readiness</a></p></footer>
</body>
</html>
"""


def docs_page(openapi_url: str = "/openapi.json") -> HTMLResponse:
    """Swagger UI over the OpenAPI document, every asset served by the service itself (no
    CDN; no validator badge, which would ask validator.swagger.io)."""
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title="medtrail — API docs",
        swagger_js_url=f"{STATIC_PATH}/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC_PATH}/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{STATIC_PATH}/swagger-ui/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": False},
    )


def patient_page(trial_rpc_url: str | None) -> str:
    """The patient's page (``api/static/patient``, a script of its own that talks to the API
    and the wallet), with the one fact it cannot ask the API for: where the embedded chain is
    served read-only for trying (``None``: nowhere; the page then reads checkpoints through
    the wallet's own node, or says it had to take the service's word)."""
    facts = json.dumps({"trialRpcUrl": trial_rpc_url}).replace("<", "\\u003c")
    return (STATIC_DIR / "patient" / "index.html").read_text().replace("__FACTS__", facts)


def patient_page_policy(page: str, trial_rpc_url: str | None) -> str:
    """The page's Content-Security-Policy: its own scripts and the one inline import map
    (by hash), requests to the service and the trial endpoint only, no frames, no forms."""
    start = page.index('<script type="importmap">') + len('<script type="importmap">')
    import_map = page[start : page.index("</script>", start)]
    digest = base64.b64encode(hashlib.sha256(import_map.encode()).digest()).decode()
    connect = "'self'" + (f" {trial_rpc_url}" if trial_rpc_url else "")
    return (
        f"default-src 'self'; script-src 'self' 'sha256-{digest}'; connect-src {connect}; "
        "img-src 'self' data:; style-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
