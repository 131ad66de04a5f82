"""The regulator's tools: verify one record's trail, audit the whole log, trusting only the chain.

``verify_trail`` (the command ``medtrail-verify-trail``) and ``audit_log``
(``medtrail-audit-log``) install with medtrail's light core — no web framework, SQL toolkit,
web3 or embedded EVM (``pip install medtrail``) — and run as ``python scripts/<tool>.py`` from
a checkout too. Their shared parts are private (``_api``: the ledger's API as the tools read
it; ``_common``: reports, output formats, exit statuses; ``_recompute``: the audit's worker
processes; ``_fhir``: FHIR export). Verification itself is :mod:`ledger.trail` and
:mod:`ledger.audit`, read from the chain through :mod:`ledger.chain.reader`.
"""
