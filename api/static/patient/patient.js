// The patient's page: sign in with a browser wallet (EIP-4361), see every event about me with
// its consent label and its proof checked here, and give or withdraw permissions (EIP-712,
// relayed by the service). Consent signing lives in consent.js, proof checks in verify.js.

import * as V from "./verify.js";
import * as Consent from "./consent.js";

const $ = (id) => document.getElementById(id);
const facts = JSON.parse($("facts").textContent);
/** Entries per page (`?per=N` to change, 1..100). */
const PAGE_SIZE = Math.min(100, Math.max(1, Number(new URLSearchParams(location.search).get("per")) || 20));
const SESSION_MINUTES = 10;
/** Before believing what a history read just before a checkpoint landed shows (a proof
 *  missing, an outdated index proof), it is read once more, after this many milliseconds. */
const RETRY_DELAY_MS = 1000;

const state = {
  provider: null,
  token: null,
  me: null,
  deployment: null,
  typedData: null,
  names: new Map(), // address (lowercase) -> {name, kind, active, address}
  events: [],
  checks: new Map(), // eventId -> {state, detail}
  index: null,
  grants: [],
  page: 0,
  chain: null, // {label, call(data) -> hex}
};

// ------------------------------------------------------------------------- messages

function say(text) {
  $("status").textContent = text;
}

function alarm(text) {
  const box = $("alert");
  box.textContent = text;
  box.hidden = !text;
}

class Refused extends Error {}

function walletError(err, doing) {
  if (err && (err.code === 4001 || /reject|denied|declin/i.test(err.message || ""))) {
    return new Refused(`You declined ${doing} in your wallet. Nothing was signed or sent.`);
  }
  return new Refused(`Your wallet could not ${doing}: ${err?.message || err}`);
}

// ------------------------------------------------------------------------- the service

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let answer;
  try {
    answer = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new Refused(`The service cannot be reached (${err.message}). Try again later.`);
  }
  if (answer.status === 401 && state.token) {
    expire();
    throw new Refused("Your session has expired. Sign in again to continue.");
  }
  const text = await answer.text();
  const data = text ? V.parseJson(text) : null;
  if (!answer.ok) {
    const detail = data && (data.detail || data.title);
    throw new Refused(`The service refused: ${detail || answer.statusText} (${answer.status}).`);
  }
  return data;
}

async function all(path, key) {
  const items = [];
  const pages = [];
  let after = null;
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api("GET", `${path}${sep}limit=1000${after === null ? "" : `&after=${after}`}`);
    items.push(...page[key]);
    pages.push(page);
    if (page.next === null || page.next === undefined) break;
    // A version-2 grant's id is its commitment (> 2^53): JSON.parse rounds `next`, so the
    // exact id is taken from the last grant's commitment.
    const last = page[key][page[key].length - 1];
    after = last && last.commitment ? BigInt(last.commitment).toString() : page.next;
  }
  return { items, pages };
}

// ------------------------------------------------------------------------- sign-in

function checksum(address) {
  const lower = address.toLowerCase().replace(/^0x/, "");
  const hash = V.bytesToHex(V.keccak256(new TextEncoder().encode(lower))).slice(2);
  let out = "0x";
  for (let i = 0; i < 40; i++) {
    out += parseInt(hash[i], 16) >= 8 ? lower[i].toUpperCase() : lower[i];
  }
  return out;
}

function rfc3339(date) {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

function utf8Hex(text) {
  return V.bytesToHex(new TextEncoder().encode(text));
}

async function signIn() {
  alarm("");
  const provider = window.ethereum;
  if (!provider) {
    $("nowallet").hidden = false;
    throw new Refused("No browser wallet was found on this page.");
  }
  state.provider = provider;
  say("Asking your wallet…");
  let accounts;
  try {
    accounts = await provider.request({ method: "eth_requestAccounts" });
  } catch (err) {
    throw walletError(err, "to share your address");
  }
  if (!accounts || !accounts.length) throw new Refused("Your wallet shared no address.");
  const address = checksum(accounts[0]);
  state.deployment = await api("GET", "/v1/deployment");
  const walletChain = parseInt(await provider.request({ method: "eth_chainId" }), 16);
  if (walletChain !== state.deployment.chainId) {
    throw new Refused(
      `Your wallet is on the wrong network (chain ${walletChain}). This service's records ` +
        `are anchored on chain ${state.deployment.chainId}: switch your wallet to that ` +
        "network and sign in again.",
    );
  }
  const info = await api("GET", "/v1/auth/nonce");
  if (info.domain !== location.host) {
    throw new Refused(
      `This service signs patients in for ${info.domain}, but this page was opened at ` +
        `${location.host}. Refusing to sign a sign-in for another site.`,
    );
  }
  const issued = new Date(Math.floor(Date.now() / 1000) * 1000);
  const message = [
    `${info.domain} wants you to sign in with your Ethereum account:`,
    address,
    "",
    "Sign in to medtrail to see who saw my health records and manage my consent.",
    "",
    `URI: ${location.origin}/patient`,
    "Version: 1",
    `Chain ID: ${info.chainId}`,
    `Nonce: ${info.nonce}`,
    `Issued At: ${rfc3339(issued)}`,
    `Expiration Time: ${rfc3339(new Date(issued.getTime() + SESSION_MINUTES * 60000))}`,
  ].join("\n");
  say("Sign the sign-in message in your wallet…");
  let signature;
  try {
    signature = await provider.request({
      method: "personal_sign",
      params: [utf8Hex(message), address],
    });
  } catch (err) {
    throw walletError(err, "to sign in");
  }
  const session = await api("POST", "/v1/auth/siwe", { message, signature });
  state.token = session.token;
  state.me = session.address;
  $("me").textContent = session.address;
  $("signin").hidden = true;
  $("app").hidden = false;
  await loadAll();
}

function expire() {
  state.token = null;
  state.me = null;
  Consent.forget();
  $("app").hidden = true;
  $("signin").hidden = false;
}

async function signOut() {
  try {
    await api("POST", "/v1/auth/logout");
  } catch {
    // the session may be over already
  }
  expire();
  say("You are signed out.");
}

// ------------------------------------------------------------------------- the chain

function jsonRpcTransport(url) {
  return async (data) => {
    // text/plain keeps it a "simple" cross-origin request (no preflight).
    const answer = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "text/plain" },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "eth_call",
        params: [{ to: state.deployment.auditLog, data }, "latest"],
      }),
    });
    const reply = await answer.json();
    if (reply.error) throw new Error(reply.error.message || "eth_call failed");
    return reply.result;
  };
}

function walletTransport(provider) {
  return (data) =>
    provider.request({
      method: "eth_call",
      params: [{ to: state.deployment.auditLog, data }, "latest"],
    });
}

/** Where the checkpoints come from: the wallet's own node, else the service's trial
 *  endpoint of its embedded chain, else (honestly labelled) the service's word. */
async function chooseChain() {
  const candidates = [
    {
      label: "the chain, read through your wallet's own connection",
      source: "wallet",
      call: walletTransport(state.provider),
    },
  ];
  if (facts.trialRpcUrl) {
    candidates.push({
      label:
        "the chain, read from this service's trial JSON-RPC endpoint (for trying only: " +
        "it is the operator's own in-process chain, not a node you chose)",
      source: "trial-rpc",
      call: jsonRpcTransport(facts.trialRpcUrl),
    });
  }
  for (const c of candidates) {
    try {
      const latest = V.decodeLatestCheckpoint(await c.call(V.latestCheckpointCall()));
      const cache = new Map();
      return {
        label: c.label,
        source: c.source,
        latest,
        at: async (size) => {
          if (!cache.has(size)) {
            cache.set(
              size,
              c
                .call(V.checkpointAtCall(size))
                .then(V.decodeCheckpointAt)
                .catch(() => null),
            );
          }
          return cache.get(size);
        },
      };
    } catch {
      // try the next source
    }
  }
  const served = await api("GET", "/v1/checkpoints/latest").catch(() => null);
  return {
    label:
      "the checkpoints this service reports (not read from the chain: no chain connection " +
      "was available to this page; check independently with the command line below)",
    source: "service",
    latest: served && {
      treeSize: served.treeSize,
      rootHash: V.hexToBytes(served.rootHash),
      indexRoot: served.indexRoot ? V.hexToBytes(served.indexRoot) : null,
    },
    at: async (size) => {
      const page = await api("GET", `/v1/checkpoints?after=${size - 1}&limit=1`).catch(() => null);
      const cp = page && page.checkpoints[0];
      if (!cp || cp.treeSize !== size || !cp.transactionHash) return null;
      return {
        rootHash: V.hexToBytes(cp.rootHash),
        indexRoot: cp.indexRoot ? V.hexToBytes(cp.indexRoot) : null,
      };
    },
  };
}

// ------------------------------------------------------------------------- loading

async function loadAll() {
  say("Reading your history…");
  state.typedData = await api("GET", "/v1/typed-data");
  const institutions = await all("/v1/institutions", "institutions");
  state.names = new Map(institutions.items.map((i) => [i.address.toLowerCase(), i]));
  await Promise.all([loadHistory(), loadGrants()]);
  fillGrantForm();
  say("");
}

async function loadHistory() {
  for (let attempt = 0; ; attempt++) {
    const { items, pages } = await all(`/v1/events?patient=${state.me}`, "events");
    state.events = items;
    state.index = V.largestIndex(pages.map((p) => p.index));
    state.checks = new Map();
    state.page = 0;
    fillFilters();
    render();
    state.chain = await chooseChain();
    const outcome = await checkProofs();
    if (attempt || !outcome.race) {
      showSummary(outcome);
      return;
    }
    // Read just before a checkpoint landed? Read the history and the chain once more.
    say("A checkpoint may have just landed: reading your history again…");
    await new Promise((done) => setTimeout(done, RETRY_DELAY_MS));
  }
}

async function loadGrants() {
  const { items } = await all(`/v1/patients/${state.me}/grants`, "grants");
  state.grants = items;
  renderGrants();
}

// ------------------------------------------------------------------------- proofs

/** Every entry's proof, then the whole history's completeness: {completeness, race}. */
async function checkProofs() {
  const chain = state.chain;
  const latestSize = chain.latest ? chain.latest.treeSize : null;
  let race = false;
  const entries = [];
  for (const view of state.events) {
    let result;
    try {
      result = await V.checkEvent(state.typedData, view, chain.at);
      result = V.judgeEntry(result, view, state.me, latestSize);
    } catch (err) {
      result = { state: "failed", detail: `cannot be checked: ${err.message}` };
    }
    race ||= Boolean(result.race);
    state.checks.set(view.eventId, result);
    const patient = view.bundle?.event?.event?.patient;
    entries.push({
      leafIndex: view.bundle?.leafIndex,
      state: result.state,
      aboutMe: typeof patient === "string" && patient.toLowerCase() === state.me.toLowerCase(),
    });
  }
  let completeness;
  try {
    completeness = await V.checkCompleteness({
      key: await V.patientKey(state.me),
      index: state.index,
      latest: chain.latest,
      at: chain.at,
      entries,
      where:
        chain.source === "service"
          ? { name: "the service's record of checkpoints", on: "in the service's record" }
          : { name: "the chain", on: "on the chain" },
    });
  } catch (err) {
    completeness = { state: "failed", text: `Completeness FAILS: ${err.message}.` };
  }
  state.completeness = completeness.state;
  render();
  return { completeness, race: race || Boolean(completeness.race) };
}

function showSummary({ completeness }) {
  const chain = state.chain;
  const counts = { verified: 0, failed: 0, pending: 0 };
  for (const r of state.checks.values()) counts[r.state] = (counts[r.state] || 0) + 1;
  const parts = [
    `Checked in this browser against ${chain.label}.`,
    `${counts.verified} of ${state.events.length} entries are proven to be in the log, ` +
      "unchanged since they were anchored.",
  ];
  if (counts.pending) {
    parts.push(
      `${counts.pending} are logged but not anchored yet: until they are, nothing proves them ` +
        "(they are the service's word).",
    );
  }
  if (counts.failed) {
    parts.push(
      `${counts.failed} FAIL their proof: what the service shows for them is not what was ` +
        "anchored. They are marked below; tell your provider or a regulator.",
    );
  }
  parts.push(completeness.text);
  if (chain.latest) {
    parts.push(`The chain's latest checkpoint covers ${chain.latest.treeSize} entries of the log.`);
  }
  const box = $("proof-summary");
  box.textContent = parts.join(" ");
  box.dataset.source = chain.source;
  box.dataset.failed = String(counts.failed);
  box.dataset.complete = completeness.state;
}

// ------------------------------------------------------------------------- rendering

function nameOf(address) {
  const info = address && state.names.get(address.toLowerCase());
  return info ? info.name : `an unregistered address ${address}`;
}

function enumName(kind, value) {
  const table = state.typedData.enums[kind] || {};
  const found = Object.entries(table).find(([, v]) => v === value);
  return found ? found[0].toLowerCase().replace("_", " ") : `#${value}`;
}

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString(undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  });
}

function describe(view) {
  const e = view.bundle.event.event;
  switch (view.type) {
    case "RecordAccess":
      return `${enumName("Action", e.action)} a record, for ${enumName("Purpose", e.purpose)}`;
    case "PrescriptionIssued":
      return `prescribed (up to ${e.fills} fills)`;
    case "PrescriptionDispensed":
      return `dispensed a prescription (fill ${e.fillNumber})`;
    case "InsuranceClaim":
      return `claimed a payment from ${nameOf(e.insurer)}`;
    case "InsurancePayment":
      return `paid a claim to ${nameOf(e.payee)}`;
    default:
      return view.type;
  }
}

const REASONS = {
  "not-found": "the permission it named does not exist",
  "not-yet-granted": "the permission it named was given later",
  "wrong-patient": "the permission it named is another patient's",
  "wrong-grantee": "the permission it named is for another institution",
  "out-of-scope": "your permission is for another record",
  "purpose-not-covered": "your permission is for another purpose",
  "not-yet-valid": "your permission had not started yet",
  expired: "your permission had expired",
  revoked: "you had withdrawn your permission",
};

function consentOf(view) {
  const e = view.bundle.event.event;
  const c = view.consent;
  if (c === "custodian") return { text: "Your care provider (it holds the record)", cls: "ok" };
  if (c === "covered") return { text: `Covered by your permission ${Consent.idLabel(e.grantId)}`, cls: "ok" };
  if (c === "emergency") {
    return { text: "Emergency access without your permission (a reason was recorded)", cls: "warn" };
  }
  if (c.startsWith("not-covered")) {
    const reason = c.split(":")[1] || "";
    return { text: `Not covered: ${REASONS[reason] || reason || "no permission"}`, cls: "bad" };
  }
  return { text: "No consent needed", cls: "" };
}

function filtered() {
  const inst = $("f-institution").value;
  const kind = $("f-kind").value;
  const from = $("f-from").value ? Date.parse($("f-from").value) / 1000 : -Infinity;
  const to = $("f-to").value ? Date.parse($("f-to").value) / 1000 + 86400 : Infinity;
  return state.events
    .filter((v) => {
      const e = v.bundle.event.event;
      if (inst && e.institution.toLowerCase() !== inst) return false;
      if (kind && v.type !== kind) return false;
      return e.occurredAt >= from && e.occurredAt < to;
    })
    .reverse();
}

function cell(row, label, ...content) {
  const td = document.createElement("td");
  td.dataset.label = label;
  td.append(...content);
  row.append(td);
  return td;
}

function span(text, cls) {
  const s = document.createElement("span");
  s.textContent = text;
  if (cls) s.className = cls;
  return s;
}

const PROOF_TEXT = {
  verified: ["Verified", "ok"],
  failed: ["FAILED", "bad"],
  pending: ["Not anchored yet", "warn"],
};

function render() {
  const rows = filtered();
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const body = $("events").tBodies[0];
  body.replaceChildren();
  for (const view of rows.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE)) {
    const e = view.bundle.event.event;
    const tr = document.createElement("tr");
    tr.dataset.eventId = view.eventId;
    tr.dataset.consent = view.consent;
    if (view.consent === "emergency") tr.className = "emergency";
    cell(tr, "When", when(e.occurredAt));
    cell(tr, "Who", nameOf(e.institution));
    cell(tr, "What", describe(view));
    const consent = consentOf(view);
    const c = cell(tr, "Your consent");
    if (view.consent === "emergency") c.append(span("Emergency", "badge warn"), " ");
    c.append(span(consent.text, consent.cls));
    const check = state.checks.get(view.eventId);
    const [label, cls] = check ? PROOF_TEXT[check.state] : ["Checking…", ""];
    const p = cell(tr, "Proof", span(label, `badge ${cls}`));
    p.dataset.proof = check ? check.state : "checking";
    if (check) p.append(span(check.detail, "why"));
    body.append(tr);
  }
  $("empty").hidden = rows.length > 0;
  $("pageinfo").textContent = `Page ${state.page + 1} of ${pages} (${rows.length} entries)`;
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page >= pages - 1;
}

function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  return o;
}

function fillFilters() {
  const select = $("f-institution");
  const seen = new Set(state.events.map((v) => v.bundle.event.event.institution.toLowerCase()));
  select.replaceChildren(option("", "All"));
  for (const a of seen) select.append(option(a, nameOf(a)));
}

function grantState(g, now) {
  if (g.revoked) return ["Withdrawn", "bad", false];
  if (g.expiresAt <= now) return ["Expired", "", false];
  if (Consent.pending(g)) return ["Waiting for the chain", "warn", true];
  if (g.notBefore > now) return ["Not started yet", "warn", true];
  return ["Active", "ok", true];
}

function renderGrants() {
  const body = $("grant-list").tBodies[0];
  body.replaceChildren();
  const now = Date.now() / 1000;
  for (const g of [...state.grants].reverse()) {
    const tr = document.createElement("tr");
    tr.dataset.grantId = Consent.grantId(g);
    cell(tr, "Institution", nameOf(g.grantee));
    cell(tr, "Records", g.allRecords ? "All my records" : `Record ${g.recordRef.slice(0, 10)}…`);
    cell(tr, "For", g.purposeNames.join(", ").replace("_", " ") || "—");
    cell(tr, "When", `${when(g.notBefore)} – ${when(g.expiresAt)}`);
    const [label, cls, revocable] = grantState(g, now);
    const st = cell(tr, "State", span(label, cls));
    st.dataset.state = label;
    const action = cell(tr, "Action");
    if (revocable) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "secondary";
      b.textContent = "Withdraw";
      b.setAttribute("aria-label", `Withdraw permission ${Consent.grantLabel(g)} of ${nameOf(g.grantee)}`);
      b.addEventListener("click", () => run(() => withdraw(g)));
      action.append(b);
    }
    body.append(tr);
  }
  $("no-grants").hidden = state.grants.length > 0;
}

function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}`
  );
}

function fillGrantForm() {
  const inst = $("g-institution");
  inst.replaceChildren();
  for (const i of state.names.values()) {
    if (i.active) inst.append(option(i.address, `${i.name} (${i.kind})`));
  }
  const rec = $("g-record");
  rec.replaceChildren(option("", "All my records"));
  const records = new Map();
  for (const v of state.events) {
    if (v.recordRef && !records.has(v.recordRef)) records.set(v.recordRef, v);
  }
  for (const [ref, v] of records) {
    const holder = v.bundle.event.event.custodian || v.bundle.event.event.institution;
    rec.append(option(ref, `Record ${ref.slice(0, 10)}… at ${nameOf(holder)}`));
  }
  const purposes = $("g-purposes");
  purposes.replaceChildren();
  for (const [name, value] of Object.entries(state.typedData.enums.Purpose)) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = String(value);
    box.name = "purpose";
    box.checked = name === "TREATMENT";
    label.append(box, ` ${name.toLowerCase().replace("_", " ")}`);
    purposes.append(label);
  }
  const now = new Date();
  $("g-from").value = localInput(now);
  $("g-until").value = localInput(new Date(now.getTime() + 30 * 86400000));
}

// ------------------------------------------------------------------------- consent

async function consentNonce() {
  return (await api("GET", `/v1/patients/${state.me}/consent-nonce`)).nonce;
}

/** `act(context)` with the wallet (a consent.js function): the wallet's refusals said plainly. */
async function withWallet(what, act) {
  say(`Confirm ${what} in your wallet…`);
  try {
    return await act({
      typedData: state.typedData,
      provider: state.provider,
      account: state.me,
      post: (path, body) => api("POST", path, body),
    });
  } catch (err) {
    if (err instanceof Refused) throw err;
    throw walletError(err, `to sign ${what}`);
  }
}

async function signed(descriptor, what) {
  return withWallet(what, (context) => Consent.signAndRelay({ ...context, ...descriptor }));
}

function v2() {
  return Consent.version(state.typedData) === 2;
}

async function give(event) {
  event.preventDefault();
  const purposes = [...document.querySelectorAll('#g-purposes input[name="purpose"]:checked')]
    .map((b) => 1 << Number(b.value))
    .reduce((a, b) => a | b, 0);
  if (!purposes) throw new Refused("Choose at least one purpose.");
  const notBefore = Math.floor(Date.parse($("g-from").value) / 1000);
  const expiresAt = Math.floor(Date.parse($("g-until").value) / 1000);
  if (!(expiresAt > notBefore)) throw new Refused("“Until” must be after “From”.");
  const grantee = $("g-institution").value;
  const recordRef = $("g-record").value || null;
  if (v2()) {
    const terms = { grantee, recordRef, purposes, notBefore, expiresAt };
    const made = await withWallet("the permission", (c) => Consent.grantV2({ ...c, ...terms }));
    await loadGrants();
    say(`Permission ${Consent.grantLabel(made)} given to ${nameOf(grantee)}.`);
    return;
  }
  const descriptor = Consent.grant({
    patient: state.me,
    grantee,
    recordRef,
    purposes,
    notBefore,
    expiresAt,
    nonce: await consentNonce(),
  });
  const made = await signed(descriptor, "the permission");
  await loadGrants();
  say(`Permission #${made.grantId} given to ${nameOf(grantee)}.`);
}

async function withdraw(g) {
  if (g.version === 2) {
    await withWallet("the withdrawal", (c) => Consent.revokeV2({ ...c, grant: g }));
    await loadGrants();
    say(`Permission ${Consent.grantLabel(g)} of ${nameOf(g.grantee)} withdrawn.`);
    return;
  }
  const descriptor = Consent.revoke({
    patient: state.me,
    grantId: g.grantId,
    nonce: await consentNonce(),
  });
  await signed(descriptor, "the withdrawal");
  await loadGrants();
  say(`Permission #${g.grantId} of ${nameOf(g.grantee)} withdrawn.`);
}

async function cancelSignatures() {
  if (v2()) {
    await loadGrants();
    const grants = state.grants;
    const done = await withWallet("the cancellation", (c) => Consent.cancelV2({ ...c, grants }));
    await loadGrants();
    say(
      done.length
        ? `Every permission you signed that was not yet in force is cancelled (${done.length}).`
        : "No signed permission was waiting: nothing to cancel.",
    );
    return;
  }
  const nonce = await consentNonce();
  const answer = await signed(
    Consent.cancelSignatures({ patient: state.me, nonce }),
    "the cancellation",
  );
  say(
    `Every signature you made and did not use is cancelled (consent counter ${nonce} → ` +
      `${answer.nonce}).`,
  );
}

// ------------------------------------------------------------------------- wiring

async function run(action) {
  alarm("");
  try {
    await action();
  } catch (err) {
    say("");
    alarm(err instanceof Refused ? err.message : `Something went wrong: ${err.message}`);
    if (!(err instanceof Refused)) console.error(err);
  }
}

$("signin-button").addEventListener("click", () => run(signIn));
$("signout").addEventListener("click", () => run(signOut));
$("grant-form").addEventListener("submit", (e) => run(() => give(e)));
$("cancel-signatures").addEventListener("click", () => run(cancelSignatures));
$("refresh").addEventListener("click", () =>
  run(async () => {
    say("Reading your history…");
    $("proof-summary").textContent = "";
    delete $("proof-summary").dataset.source;
    delete $("proof-summary").dataset.complete;
    await loadHistory();
    say("");
  }),
);
for (const id of ["f-institution", "f-kind", "f-from", "f-to"]) {
  $(id).addEventListener("change", () => {
    state.page = 0;
    render();
  });
}
$("prev").addEventListener("click", () => {
  state.page -= 1;
  render();
});
$("next").addEventListener("click", () => {
  state.page += 1;
  render();
});
if (window.ethereum) {
  // Another account or network in the wallet: what this page shows is no longer its own.
  const changed = (what) => () => {
    if (!state.token) return;
    expire();
    alarm(`Your wallet switched ${what}. Sign in again to continue.`);
  };
  window.ethereum.on?.("accountsChanged", changed("accounts"));
  window.ethereum.on?.("chainChanged", changed("networks"));
} else {
  $("nowallet").hidden = false;
}
document.body.dataset.ready = "true";
