"""The patient's page (issue 19), end to end in a real browser: Debian's chromium driven by
Playwright against the API served by uvicorn, with an injected EIP-1193 wallet (window.ethereum)
whose every request is answered in Python by a test key (eth-account): sign in, the seeded
trail's accesses with their consent labels and proofs checked in the browser against the
checkpoint read from the chain (the embedded chain's trial JSON-RPC endpoint), a grant made on
the page covering a later access, its withdrawal, cancelled signatures, a tampered entry shown
failing its proof, a history served incomplete in each way the completeness rules name (its
index proof dropped, a listed entry served as not anchored, an older checkpoint's index proof,
another patient's entry: the service's answers rewritten in the browser), and the errors a patient
meets (wallet refused, wrong chain, session expired).

One server and one browser per module; each test opens its own browser context."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils import keccak
from sqlalchemy import update

from api.pages import NOBLE_HASHES_VERSION, STATIC_DIR
from api.trial_rpc import TrialRpcServer
from ledger.chain.embedded import LockedEthereumTesterProvider
from ledger.events import InstitutionKind, Purpose, RecordAccess
from ledger.store.models import PatientSessionRow
from tests.api.test_pages import CHROMIUM, _contrast, _playwright
from tests.api.world import World, open_world, sign_in
from tests.scripts.support import h, rewrite_body
from tests.support.actors import Institution
from tests.support.anvil import free_port

VENDORED = STATIC_DIR / "patient" / "vendor" / "noble-hashes"
INDEX_VECTORS = Path(__file__).resolve().parents[2] / "docs" / "index.md"
#: Where to write the README's screenshots (unset: a temporary directory).
SCREENSHOTS = os.environ.get("MEDTRAIL_SCREENSHOTS")

# The injected wallet: every EIP-1193 request goes to Python (TestWallet.answer).
PROVIDER_JS = """
window.ethereum = {
  isMedtrailTestWallet: true,
  async request({ method, params }) {
    const answer = await window.__wallet(method, JSON.stringify(params || []));
    if (answer.error) {
      const err = new Error(answer.error.message);
      err.code = answer.error.code;
      throw err;
    }
    return answer.result;
  },
  on() {},
  removeListener() {},
};
"""


@dataclass
class TestWallet:
    """A browser wallet backed by one key: what it was asked, and what it refuses."""

    __test__ = False

    account: Any
    chain_id: int
    refuse: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)
    typed: list[dict[str, Any]] = field(default_factory=list)
    #: A JSON-RPC node the wallet reads the chain through (None: it has none for this chain).
    rpc_url: str | None = None

    def answer(self, method: str, params_json: str) -> dict[str, Any]:
        self.asked.append(method)
        params = json.loads(params_json)
        if method in self.refuse:
            return {"error": {"code": 4001, "message": "User rejected the request."}}
        if method in ("eth_requestAccounts", "eth_accounts"):
            return {"result": [self.account.address.lower()]}
        if method == "eth_chainId":
            return {"result": hex(self.chain_id)}
        if method == "personal_sign":
            message, address = params
            assert address.lower() == self.account.address.lower()
            signed = self.account.sign_message(encode_defunct(hexstr=message))
            return {"result": "0x" + bytes(signed.signature).hex()}
        if method == "eth_signTypedData_v4":
            address, document = params
            assert address.lower() == self.account.address.lower()
            data = json.loads(document)
            self.typed.append(data)
            signed = self.account.sign_typed_data(full_message=data)
            return {"result": "0x" + bytes(signed.signature).hex()}
        if method == "eth_call" and self.rpc_url is not None:
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            return {"result": httpx.post(self.rpc_url, json=body).json()["result"]}
        # Like a wallet without a node for this chain: the page must read the chain elsewhere.
        return {"error": {"code": 4200, "message": f"{method} is not supported"}}


@dataclass
class Site:
    world: World
    base: str
    browser: Any
    covered: bytes
    emergency: RecordAccess
    clinic: Institution


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The API of a seeded world on a real port, its chain's trial JSON-RPC endpoint, and a
    chromium (:func:`open_site`)."""
    with open_site(tmp_path_factory.mktemp("patient")) as running:
        yield running


@contextmanager
def open_site(tmp: Path, **settings: Any) -> Iterator[Site]:
    """The API of a seeded world (``settings``: the ledger's) on a real port, its chain's
    trial JSON-RPC endpoint, and a chromium. Patient P's trail: the custodian's access and
    prescription, an access by another hospital under P's grant, and an emergency access by a
    third."""
    port = free_port()
    with open_world(tmp, siwe_domain=f"127.0.0.1:{port}", **settings) as world:
        ledger, env = world.ledger, world.env
        clinic = env.institution("Riverside Clinic", InstitutionKind.HOSPITAL)
        er = env.institution("City Emergency", InstitutionKind.HOSPITAL)
        at = ledger.chain.latest_timestamp()
        covered = world.b.access(
            world.record_a,
            world.p.address,
            custodian=world.a.address,
            grantId=world.grant_p,
            occurredAt=at,
        )
        emergency = er.access(
            world.record_a,
            world.p.address,
            custodian=world.a.address,
            reasonHash=h("er"),
            occurredAt=at,
        )
        world.submit(world.b, covered)
        world.submit(er, emergency)
        ledger.anchor_now()
        ledger.anchor_now()
        provider = ledger.chain.w3.provider
        assert isinstance(provider, LockedEthereumTesterProvider)
        with TrialRpcServer(provider, 0) as trial:
            world.app.state.trial_rpc_url = trial.url
            server = uvicorn.Server(
                uvicorn.Config(
                    world.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
                )
            )
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            deadline = time.monotonic() + 20
            while not server.started:
                assert time.monotonic() < deadline, "uvicorn did not start"
                assert thread.is_alive(), "uvicorn stopped"
                time.sleep(0.02)
            try:
                with _playwright()() as playwright:
                    browser = playwright.chromium.launch(
                        executable_path=str(CHROMIUM),
                        args=["--no-sandbox", "--disable-dev-shm-usage"],
                    )
                    try:
                        yield Site(
                            world,
                            f"http://127.0.0.1:{port}",
                            browser,
                            covered.eventId,
                            emergency,
                            clinic,
                        )
                    finally:
                        browser.close()
            finally:
                server.should_exit = True
                thread.join(timeout=20)


def _open(
    site: Site, wallet: TestWallet | None, query: str = "", **context: Any
) -> tuple[Any, Any, list[str]]:
    """A new browser context on /patient with ``wallet`` injected: (context, page, requests)."""
    ctx = site.browser.new_context(**({"viewport": {"width": 1280, "height": 900}} | context))
    requests: list[str] = []
    page = ctx.new_page()
    page.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if wallet is not None:
        page.expose_function("__wallet", wallet.answer)
        page.add_init_script(PROVIDER_JS)
    page.goto(f"{site.base}/patient{query}")
    page.wait_for_selector("body[data-ready=true]")
    assert errors == []
    return ctx, page, requests


def _wallet(site: Site, **kw: Any) -> TestWallet:
    return TestWallet(site.world.p.account, site.world.ledger.deployment.chain_id, **kw)


def _sign_in(page: Any, *, click: bool = True) -> None:
    if click:
        page.get_by_role("button", name="Sign in with my wallet").click()
    page.wait_for_selector("#app:not([hidden])")
    # Every entry checked (the summary is written last, with the rows' final states).
    page.wait_for_selector("#proof-summary[data-source]")
    assert page.locator("[data-proof=checking]").count() == 0


def _row(page: Any, event_id: bytes) -> Any:
    return page.locator(f'tr[data-event-id="0x{event_id.hex()}"]')


def _shoot(page: Any, name: str, tmp: Path) -> None:
    target = Path(SCREENSHOTS) if SCREENSHOTS else tmp
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / name), full_page=True)


# --------------------------------------------------------------------------- the checks


def test_the_page_checks_proofs_as_the_python_reference_does(site: Site) -> None:
    """verify.js against docs/index.md's vectors (lookup proofs of presence and absence, a
    corrupted one refused) and the service's EIP-712 domain separators."""
    ctx, page, _ = _open(site, None)
    try:
        typed = site.world.client.get("/v1/typed-data").json()
        result = page.evaluate(
            """async (typed) => {
                const V = await import('/static/patient/verify.js');
                const hex = V.bytesToHex;
                const rec = await V.recordKey('0x' + '00'.repeat(32));
                const pat = await V.patientKey('0x' + '11'.repeat(20));
                const root = V.hexToBytes(
                  '1232ac0f4e3eb3ee774804d96d283b39ed4c7a36f85371f515b9112306ff961e');
                const sib = (s) => '000180' + s + '01';
                const recProof = V.hexToBytes(
                  sib('77af2ddfcd7697f87db3d9300d3f59e1388d10bb3aea58fd3c9bf07ac1099510'));
                const patProof = V.hexToBytes(
                  sib('6ee9638408a7049b471cc8f5371260e41bdee43e35e459b1dc73c2b6be91de35'));
                const absent = await V.sha256(new TextEncoder().encode('absent'));
                const absProof = V.hexToBytes('000180' +
                  '77af2ddfcd7697f87db3d9300d3f59e1388d10bb3aea58fd3c9bf07ac1099510' + '02' +
                  hex(rec).slice(2) +
                  '418413220c5b7fd9314f83b34291a3f26085b3c12198c567ab8adbf0803388ec');
                const outcome = async (key, list, proof) => {
                  try { await V.verifyListLookup(key, list, proof, root, 6); return 'ok'; }
                  catch (e) { return e.message; }
                };
                return {
                  empty: hex(await V.emptyHash()),
                  record: hex(rec), patient: hex(pat),
                  list3: hex(await V.listRoot([0, 2, 5])),
                  list4: hex(await V.listRoot([0, 1, 2, 5])),
                  recordOk: await outcome(rec, [0, 2, 5], recProof),
                  patientOk: await outcome(pat, [0, 1, 2, 5], patProof),
                  absentOk: await outcome(absent, [], absProof),
                  shortened: await outcome(pat, [0, 1, 5], patProof),
                  claimedEmpty: await outcome(rec, [], recProof),
                  beyond: await outcome(rec, [0, 2, 6], recProof),
                  separators: Object.fromEntries(Object.entries(typed.domains).map(
                    ([k, d]) => [k, hex(V.domainSeparator(typed.types, d))])),
                };
            }""",
            typed,
        )
    finally:
        ctx.close()
    vectors = INDEX_VECTORS.read_text()
    for name in ("empty", "record", "patient", "list3", "list4"):
        assert result[name][2:] in vectors, name
    assert result["recordOk"] == result["patientOk"] == result["absentOk"] == "ok"
    assert result["shortened"] == "the list does not lead to the index root"
    assert result["claimedEmpty"] == "a proof of presence for a list claimed empty"
    assert result["beyond"] == "the list names leaf 6, beyond the log of 6"
    assert result["separators"] == typed["domainSeparators"]


def test_the_pages_completeness_rules_are_the_python_verifiers(site: Site) -> None:
    """verify.js's checkCompleteness on docs/index.md's vector (patient 0x11…11's list
    [0, 1, 2, 5] at a log of 6): complete only when every listed entry is shown proven, and
    each way ledger/completeness.py fails, failed."""
    ctx, page, _ = _open(site, None)
    try:
        result = page.evaluate(
            """async () => {
                const V = await import('/static/patient/verify.js');
                const key = await V.patientKey('0x' + '11'.repeat(20));
                const root = V.hexToBytes(
                  '1232ac0f4e3eb3ee774804d96d283b39ed4c7a36f85371f515b9112306ff961e');
                const index = {key: V.bytesToHex(key), treeSize: 6, leafIndexes: [0, 1, 2, 5],
                  proof: '000180' +
                    '6ee9638408a7049b471cc8f5371260e41bdee43e35e459b1dc73c2b6be91de35' + '01'};
                const shown = (states, more = []) => [0, 1, 2, 5].map((leafIndex, i) => (
                  {leafIndex, state: states[i] || 'verified', aboutMe: true})).concat(more);
                const where = {name: 'the chain', on: 'on the chain'};
                const run = async (over) => {
                  const c = await V.checkCompleteness({key, index, latest: {treeSize: 6},
                    at: async (n) => (n === 6 ? {indexRoot: root} : null),
                    entries: shown([]), where, ...over});
                  return [c.state, c.race, c.text];
                };
                return {
                  complete: await run({}),
                  nothing: await run({index: null, latest: null}),
                  noProof: await run({index: null}),
                  otherKey: await run({index: {...index, key: '0x' + '00'.repeat(32)}}),
                  notOnChain: await run({at: async () => null}),
                  shortened: await run({index: {...index, leafIndexes: [0, 1, 5]}}),
                  missing: await run({entries: shown([]).slice(1)}),
                  pending: await run({entries: shown(['verified', 'pending'])}),
                  failed: await run({entries: shown(['failed'])}),
                  extra: await run({entries: shown([], [
                    {leafIndex: 3, state: 'verified', aboutMe: true}])}),
                  above: await run({entries: shown([], [
                    {leafIndex: 6, state: 'pending', aboutMe: true}])}),
                  stranger: await run({entries: shown([], [
                    {leafIndex: 7, state: 'pending', aboutMe: false}])}),
                  outdated: await run({latest: {treeSize: 9}}),
                  largest: V.largestIndex([null, {treeSize: 9}, {treeSize: 12}, {treeSize: 3}]),
                };
            }"""
        )
    finally:
        ctx.close()
    complete = "Complete: the index committed on the chain at 6 entries lists exactly the 4"
    assert result.pop("complete") == [
        "verified",
        False,
        f"{complete} entries about you shown here, each proven.",
    ]
    assert result.pop("above")[0] == "verified"  # beyond the checkpoint: not covered yet
    assert result.pop("nothing")[:2] == ["none", False]
    assert result.pop("largest") == {"treeSize": 12}
    expected = {
        "noProof": "the chain holds a checkpoint of 6 entries, but the service did not send",
        "otherKey": "for another list than the list about you",
        "notOnChain": "names a checkpoint of 6 entries that the chain does not hold",
        "shortened": "is not the one committed at the checkpoint of 6 entries",
        "missing": "1 of the 4 entries the chain's index lists about you is not shown (entry 0)",
        "pending": "1 entry the index lists about you is shown without a proof that checks "
        "(entry 1)",
        "failed": "without a proof that checks (entry 0)",
        "extra": "1 entry is shown that the index does not list about you (entry 3)",
        "stranger": "1 entry shown is about another patient",
        "outdated": "older checkpoint (6 entries) than the latest one the chain holds (9 entries)",
    }
    assert set(result) == set(expected)
    for name, words in expected.items():
        state, race, text = result[name]
        assert state == "failed", name
        assert race is (name == "outdated"), name
        assert text.startswith("Completeness FAILS: "), name
        assert words in text, (name, text)


def test_the_page_hashes_a_claim_of_more_than_2_to_the_53_exactly(site: Site) -> None:
    """EIP-712 digests in the browser equal eth-account's, for a uint256 JSON cannot hold in
    a double."""
    typed = site.world.client.get("/v1/typed-data").json()
    claim = {
        "eventId": "0x" + "11" * 32,
        "serviceRef": "0x" + "22" * 32,
        "patient": site.world.p.address,
        "institution": site.world.a.address,
        "insurer": site.world.b.address,
        "amount": 2**70 + 1,
        "contentHash": "0x" + "33" * 32,
        "occurredAt": 1_800_000_000,
    }
    document = {
        "types": {k: typed["types"][k] for k in ("EIP712Domain", "InsuranceClaim")},
        "domain": typed["domains"]["auditLog"],
        "primaryType": "InsuranceClaim",
        "message": claim,
    }
    signable = encode_typed_data(full_message=document)
    expected = "0x" + keccak(b"\x19" + signable.version + signable.header + signable.body).hex()
    ctx, page, _ = _open(site, None)
    try:
        computed = page.evaluate(
            """async ([typed, text]) => {
                const V = await import('/static/patient/verify.js');
                const claim = V.parseJson(text);
                return [typeof claim.amount,
                        V.bytesToHex(V.typedDataDigest(typed, 'InsuranceClaim', claim))];
            }""",
            [typed, json.dumps(claim)],
        )
    finally:
        ctx.close()
    assert computed == ["bigint", expected]


def test_a_patient_signs_in_and_sees_who_saw_their_records_proven(
    site: Site, tmp_path: Path
) -> None:
    wallet = _wallet(site)
    ctx, page, requests = _open(site, wallet)
    try:
        # By keyboard: the skip link first, then the sign-in button.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "signin-button"
        page.keyboard.press("Enter")
        _sign_in(page, click=False)
        assert page.locator("#me").inner_text() == site.world.p.address
        rows = page.locator("#events tbody tr")
        # The custodian's access and prescription, the covered and the emergency access (and
        # the grant test's later access, if it ran first in this process).
        assert rows.count() >= 4
        covered = _row(page, site.covered)
        assert "Other Hospital" in covered.inner_text()
        assert f"Covered by your permission #{site.world.grant_p}" in covered.inner_text()
        emergency = _row(page, site.emergency.eventId)
        assert emergency.get_attribute("class") == "emergency"
        assert "Emergency access without your permission" in emergency.inner_text()
        own = _row(page, site.world.event_a)
        assert "Your care provider" in own.inner_text()
        assert "read a record, for treatment" in own.inner_text()
        for event_id in (site.world.event_a, site.covered, site.emergency.eventId):
            assert _row(page, event_id).locator("[data-proof]").get_attribute("data-proof") == (
                "verified"
            )
        assert page.locator("[data-proof=failed]").count() == 0
        summary = page.locator("#proof-summary")
        assert summary.get_attribute("data-source") == "trial-rpc"
        text = summary.inner_text()
        assert "trial JSON-RPC endpoint (for trying only" in text
        verified = page.locator("[data-proof=verified]").count()
        assert f"{verified} of {rows.count()} entries are proven" in text
        assert "Complete: the index committed on the chain" in text
        # Filters: by kind, by institution.
        page.select_option("#f-kind", "PrescriptionIssued")
        assert rows.count() == 1
        assert "prescribed" in rows.first.inner_text()
        page.select_option("#f-kind", "")
        page.select_option("#f-institution", site.world.b.address.lower())
        assert rows.count() == 1
        assert rows.first.get_attribute("data-event-id") == "0x" + site.covered.hex()
        page.select_option("#f-institution", "")
        page.fill("#f-from", "2999-01-01")
        page.locator("#f-from").dispatch_event("change")
        assert rows.count() == 0
        assert page.get_by_text("Nothing matches.").is_visible()
        page.fill("#f-from", "")
        page.locator("#f-from").dispatch_event("change")
        total = rows.count()
        # The wallet was asked to sign in only: a SIWE message, no typed data.
        assert "personal_sign" in wallet.asked
        assert wallet.typed == []
        # Accessible: labelled controls, text contrast AA (keyboard: see the sign-in above).
        assert page.get_by_label("Institution", exact=True).count() == 1
        colours = page.evaluate(
            """() => { const s = (q) => getComputedStyle(document.querySelector(q));
                return {bg: s('body').backgroundColor, text: s('body').color,
                        ok: s('.badge.ok').color, warn: s('.badge.warn').color,
                        row: s('tr.emergency').backgroundColor}; }"""
        )
        assert _contrast(colours["text"], colours["bg"]) >= 4.5
        assert _contrast(colours["ok"], colours["bg"]) >= 4.5
        assert _contrast(colours["warn"], colours["row"]) >= 4.5
    finally:
        ctx.close()
    strangers = [u for u in requests if not u.startswith("http://127.0.0.1:")]
    assert strangers == []

    # Three entries a page: the pager walks them, newest first, each entry once.
    paged, page, _ = _open(site, _wallet(site), query="?per=3")
    try:
        _sign_in(page)
        seen = page.locator("#events tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.eventId)"
        )
        assert len(seen) == 3
        assert page.get_by_role("button", name="Newer").is_disabled()
        page.get_by_role("button", name="Older").click()
        seen += page.locator("#events tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.eventId)"
        )
        assert len(seen) == len(set(seen)) == min(total, 6)
        assert "Page 2 of" in page.locator("#pageinfo").inner_text()
    finally:
        paged.close()

    # A wallet with a node of its own for this chain: the checkpoints are read through it.
    node = _wallet(site, rpc_url=site.world.app.state.trial_rpc_url)
    phone, page, _ = _open(site, node, viewport={"width": 390, "height": 844})
    try:
        _sign_in(page)
        summary = page.locator("#proof-summary")
        assert summary.get_attribute("data-source") == "wallet"
        assert "read through your wallet's own connection" in summary.inner_text()
        assert "eth_call" in node.asked
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        phone.close()


def test_grant_then_a_covered_access_then_revoke_then_cancel_signatures(site: Site) -> None:
    world, clinic = site.world, site.clinic
    ledger = world.ledger
    wallet = _wallet(site)
    ctx, page, _ = _open(site, wallet)
    try:
        _sign_in(page)
        page.select_option("#g-institution", clinic.address)
        page.get_by_role("button", name="Sign and give permission").click()
        page.wait_for_selector("#status:has-text('Permission #')")
        assert wallet.typed[-1]["primaryType"] == "Grant"
        grants = world.client.get(
            f"/v1/patients/{world.p.address}/grants", headers=world.headers("patient_p")
        ).json()["grants"]
        made = grants[-1]
        assert made["grantee"] == clinic.address
        assert made["allRecords"] is True
        assert made["purposeNames"] == ["treatment"]
        row = page.locator(f'#grant-list tr[data-grant-id="{made["grantId"]}"]')
        assert "Riverside Clinic" in row.inner_text()
        assert row.locator("[data-state]").inner_text() == "Active"

        # The clinic reads the record under it: shown covered by that permission.
        # Within the grant's window: the page's "From" is the wall clock's minute, which the
        # embedded chain's block time (fixed when its pending block opened) may lag behind.
        at = max(ledger.chain.latest_timestamp(), made["createdAt"], made["notBefore"]) + 1
        access = clinic.access(
            world.record_a,
            world.p.address,
            custodian=world.a.address,
            grantId=made["grantId"],
            purpose=Purpose.TREATMENT,
            occurredAt=at,
        )
        world.submit(clinic, access)
        page.get_by_role("button", name="Check again for new entries").click()
        page.wait_for_selector(f'tr[data-event-id="0x{access.eventId.hex()}"] [data-proof=pending]')
        covered = _row(page, access.eventId)
        assert f"Covered by your permission #{made['grantId']}" in covered.inner_text()
        assert covered.locator("[data-proof]").get_attribute("data-proof") == "pending"

        # Withdraw it.
        page.get_by_role(
            "button", name=f"Withdraw permission #{made['grantId']} of Riverside Clinic"
        ).click()
        page.wait_for_selector("#status:has-text('withdrawn')")
        assert wallet.typed[-1]["primaryType"] == "Revoke"
        assert row.locator("[data-state]").inner_text() == "Withdrawn"
        assert world.ledger.grant(made["grantId"]).revoked

        # Cancel outstanding signatures: the consent nonce moves on.
        before = ledger.consent_nonce(world.p.address)
        page.get_by_role("button", name="Cancel my outstanding signatures").click()
        page.wait_for_selector("#status:has-text('cancelled')")
        assert wallet.typed[-1]["primaryType"] == "IncreaseNonce"
        assert ledger.consent_nonce(world.p.address) == before + 1
    finally:
        ctx.close()


def test_without_a_chain_to_read_the_page_says_it_took_the_services_word(site: Site) -> None:
    app = site.world.app
    trial, app.state.trial_rpc_url = app.state.trial_rpc_url, None
    try:
        ctx, page, _ = _open(site, _wallet(site))
        try:
            _sign_in(page)
            summary = page.locator("#proof-summary")
            assert summary.get_attribute("data-source") == "service"
            assert "not read from the chain" in summary.inner_text()
            assert "Complete: the index committed in the service's record at" in (
                summary.inner_text()
            )
            assert _row(page, site.covered).locator("[data-proof]").get_attribute("data-proof") == (
                "verified"
            )
        finally:
            ctx.close()
    finally:
        app.state.trial_rpc_url = trial


def test_declined_signatures_a_wrong_chain_and_an_expired_session_are_said_plainly(
    site: Site,
) -> None:
    world = site.world
    refusing = _wallet(site, refuse={"personal_sign"})
    ctx, page, _ = _open(site, refusing)
    try:
        page.get_by_role("button", name="Sign in with my wallet").click()
        alert = page.get_by_role("alert")
        alert.wait_for()
        assert "You declined to sign in in your wallet" in alert.inner_text()
        assert page.locator("#app").is_hidden()
    finally:
        ctx.close()

    elsewhere = TestWallet(world.p.account, 1)
    ctx, page, _ = _open(site, elsewhere)
    try:
        page.get_by_role("button", name="Sign in with my wallet").click()
        alert = page.get_by_role("alert")
        alert.wait_for()
        chain_id = world.ledger.deployment.chain_id
        assert "wrong network (chain 1)" in alert.inner_text()
        assert f"anchored on chain {chain_id}" in alert.inner_text()
        assert "personal_sign" not in elsewhere.asked
    finally:
        ctx.close()

    wallet = _wallet(site, refuse={"eth_signTypedData_v4"})
    ctx, page, _ = _open(site, wallet)
    try:
        _sign_in(page)
        page.get_by_role("button", name="Sign and give permission").click()
        alert = page.get_by_role("alert")
        alert.wait_for()
        assert "You declined to sign the permission in your wallet" in alert.inner_text()
        # The session ends behind the page's back: the next request says so.
        with world.ledger.store.write() as connection:
            connection.execute(update(PatientSessionRow).values(expires_at=0))
        wallet.refuse.clear()
        page.get_by_role("button", name="Cancel my outstanding signatures").click()
        page.wait_for_selector("#alert:has-text('Your session has expired')")
        assert page.locator("#signin").is_visible()
    finally:
        ctx.close()


def test_an_entry_altered_behind_the_services_back_fails_its_proof(site: Site) -> None:
    """The emergency access's purpose rewritten in the store (put back afterwards)."""
    world = site.world
    rewrite_body(world.ledger, site.emergency, purpose=Purpose.PUBLIC_HEALTH)
    ctx, page, _ = _open(site, _wallet(site))
    try:
        _sign_in(page)
        row = _row(page, site.emergency.eventId)
        proof = row.locator("[data-proof]")
        assert proof.get_attribute("data-proof") == "failed"
        assert "FAILED" in proof.inner_text()
        assert "not the one that was logged" in proof.inner_text()
        assert page.locator("[data-proof=failed]").count() == 1
        summary = page.locator("#proof-summary")
        assert summary.get_attribute("data-failed") == "1"
        assert "1 FAIL their proof" in summary.inner_text()
    finally:
        ctx.close()
        rewrite_body(world.ledger, site.emergency)


# --------------------------------------------------------------------------- as served


def test_the_page_is_served_with_where_to_read_the_chain_and_nothing_from_elsewhere(
    site: Site,
) -> None:
    client = site.world.client
    answer = client.get("/patient")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.text
    facts = re.search(r'<script type="application/json" id="facts">(.*?)</script>', page)
    assert facts is not None
    assert json.loads(facts.group(1)) == {"trialRpcUrl": site.world.app.state.trial_rpc_url}
    refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    refs += re.findall(r'"(/[^"]+\.js)"', page)  # the import map's
    assert refs
    assert all(ref.startswith(("/", "#", "data:")) for ref in refs), refs
    for ref in refs:
        if ref.startswith("/static/"):
            assert client.get(ref).status_code == 200, ref
    assert 'name="viewport"' in page
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in policy
    assert f"connect-src 'self' {site.world.app.state.trial_rpc_url};" in policy
    assert "/patient" not in client.get("/openapi.json").json()["paths"]


def test_the_vendored_keccak_is_the_pinned_release_with_its_licence(site: Site) -> None:
    sums = (VENDORED / "SHA256SUMS").read_text().splitlines()
    assert {line.split()[1] for line in sums} == {
        "LICENSE",
        "_u64.js",
        "crypto.js",
        "sha3.js",
        "utils.js",
    }
    for line in sums:
        digest, name = line.split()
        assert hashlib.sha256((VENDORED / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (VENDORED / "LICENSE").read_text()
    assert f"**{NOBLE_HASHES_VERSION}**" in (VENDORED / "VENDORED.md").read_text()
    served = site.world.client.get("/static/patient/vendor/noble-hashes/sha3.js")
    assert served.content == (VENDORED / "sha3.js").read_bytes()


# --------------------------------------------------------------------------- served incomplete

#: The page's reads of the patient's history (every page of it).
HISTORY = re.compile(r"/v1/events\?patient=")

Rewrite = Callable[[str, dict[str, Any]], dict[str, Any]]


def _tampered(site: Site, rewrite: Rewrite) -> tuple[Any, Any, list[str]]:
    """The page, signed in, with every answer to its history reads rewritten by
    ``rewrite(url, body)`` (the service's real answer, as JSON) before the page sees it."""

    def handle(route: Any) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, json=rewrite(route.request.url, answer.json()))

    ctx, page, requests = _open(site, _wallet(site))
    page.route(HISTORY, handle)
    _sign_in(page)
    return ctx, page, requests


def _reads(requests: list[str]) -> int:
    return sum(1 for url in requests if HISTORY.search(url))


def _fails(page: Any, *phrases: str) -> str:
    """The summary says completeness fails, in these words; returns it."""
    summary = page.locator("#proof-summary")
    assert summary.get_attribute("data-complete") == "failed"
    text: str = summary.inner_text()
    assert "Completeness FAILS" in text
    assert "Complete:" not in text
    for phrase in phrases:
        assert phrase in text
    return text


def _history(site: Site, account: Any) -> dict[str, Any]:
    """What the service serves ``account``'s patient about their history (a fresh session: a
    test above ends every session)."""
    client = site.world.client
    token = sign_in(client, account)
    answer = client.get(
        f"/v1/events?patient={account.address}", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _view(body: dict[str, Any], event_id: bytes) -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in body["events"] if v["eventId"] == "0x" + event_id.hex())
    return found


def test_a_history_served_without_its_index_proof_is_not_called_complete(site: Site) -> None:
    """The chain holds checkpoints but no page carries the index proof: index-proof-missing."""
    ctx, page, _ = _tampered(site, lambda _url, body: body | {"index": None})
    try:
        _fails(
            page,
            "the chain holds a checkpoint of",
            "the service did not send the proof that the list of entries about you is whole",
            "Entries about you may be hidden",
        )
        # The entries themselves still check: only the whole is unproven.
        assert page.locator("[data-proof=failed]").count() == 0
    finally:
        ctx.close()


def test_a_listed_entry_served_as_not_anchored_fails_after_one_more_read(site: Site) -> None:
    """The emergency access, which the index lists and a checkpoint covers, served as "not
    anchored yet" (its proof removed): the reviewer's hidden break-glass access. It fails
    (proof-missing), and so does completeness; the history was read twice (the race rule)."""
    leaf: list[int] = []

    def pending(_url: str, body: dict[str, Any]) -> dict[str, Any]:
        bundle = _view(body, site.emergency.eventId)["bundle"]
        leaf.append(bundle["leafIndex"])
        assert bundle["leafIndex"] in body["index"]["leafIndexes"]
        bundle.update(checkpoint=None, inclusionPath=[])
        return body

    ctx, page, requests = _tampered(site, pending)
    try:
        proof = _row(page, site.emergency.eventId).locator("[data-proof]")
        assert proof.get_attribute("data-proof") == "failed"
        assert f"the service says entry {leaf[0]} is not anchored yet" in proof.inner_text()
        assert "its proof is missing" in proof.inner_text()
        _fails(page, f"shown without a proof that checks (entry {leaf[0]})")
        assert "1 FAIL their proof" in page.locator("#proof-summary").inner_text()
        assert _reads(requests) == 2
    finally:
        ctx.close()


def test_another_patients_entry_in_the_history_fails(site: Site) -> None:
    """Q's access slipped into P's history: that entry fails, and so does completeness."""
    world = site.world
    theirs = _history(site, world.q.account)
    stranger = _view(theirs, world.event_b)

    def add(_url: str, body: dict[str, Any]) -> dict[str, Any]:
        events = sorted([*body["events"], stranger], key=lambda v: v["bundle"]["leafIndex"])
        return body | {"events": events}

    ctx, page, _ = _tampered(site, add)
    try:
        proof = _row(page, world.event_b).locator("[data-proof]")
        assert proof.get_attribute("data-proof") == "failed"
        assert "about another patient, not you" in proof.inner_text()
        leaf = stranger["bundle"]["leafIndex"]
        _fails(
            page,
            "1 entry shown is about another patient",
            f"shown that the index does not list about you (entry {leaf})",
        )
    finally:
        ctx.close()


def test_an_older_checkpoints_index_proof_fails_and_the_largest_of_the_pages_is_used(
    site: Site,
) -> None:
    """The history proven complete at a checkpoint before the chain's latest (a copy of the
    log served from before an access was anchored): trail-outdated, after one more read. And
    served over two pages whose last carries that older proof while the first carries the
    latest, the page takes the latest: complete."""
    world = site.world
    before = _history(site, world.p.account)["index"]
    later = world.a.access(
        world.record_a,
        world.p.address,
        occurredAt=world.ledger.chain.latest_timestamp(),
    )
    world.submit(world.a, later)
    world.ledger.anchor_now()  # sent
    world.ledger.anchor_now()  # mined: served from now on
    latest = _history(site, world.p.account)["index"]
    assert latest["treeSize"] > before["treeSize"]

    ctx, page, requests = _tampered(site, lambda _url, body: body | {"index": before})
    try:
        assert page.locator("[data-proof=failed]").count() == 0
        _fails(
            page,
            f"for an older checkpoint ({before['treeSize']} entries) than the latest one the "
            f"chain holds ({latest['treeSize']} entries)",
        )
        assert _reads(requests) == 2
    finally:
        ctx.close()

    def two_pages(url: str, body: dict[str, Any]) -> dict[str, Any]:
        if "after=" not in url:  # the first page: one entry, the latest index proof
            return body | {
                "events": body["events"][:1],
                "next": body["events"][0]["bundle"]["leafIndex"],
            }
        assert body["next"] is None  # the service's answer after that entry: the rest
        return body | {"index": before}

    ctx, page, requests = _tampered(site, two_pages)
    try:
        summary = page.locator("#proof-summary")
        assert summary.get_attribute("data-complete") == "verified"
        assert f"Complete: the index committed on the chain at {latest['treeSize']} entries" in (
            summary.inner_text()
        )
        assert _row(page, later.eventId).locator("[data-proof]").get_attribute("data-proof") == (
            "verified"
        )
        assert _reads(requests) == 2  # two pages, read once
    finally:
        ctx.close()
