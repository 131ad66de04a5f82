// Every consent signature the patient page makes, in one place.
//
// The page never builds a typed-data type itself: it takes the EIP-712 domain and struct
// from the service's typed-data document (GET /v1/typed-data), has the wallet sign it with
// eth_signTypedData_v4, and posts the signature to the service's relay endpoint (the service
// pays the gas). `signAndRelay` is generic over the struct; the three descriptors below are
// the only places that know the version-1 ConsentRegistry messages (Grant, Revoke,
// IncreaseNonce) and their relay endpoints, so that a new consent format changes this file only.
//
// Consent version 2 (the document's `consentV2`: ConsentRegistryV2, docs/upgrading.md) is the
// second half of this file: the chain holds only a salted commitment to each grant, and a grant
// is revoked by presenting a secret only the patient can derive — keccak256(root ‖ salt), the
// root being the hash of the wallet's signature over RevocationKey(patient), asked once per
// session and kept in memory only (ledger/consent.py is the reference; the page's results are
// checked against it in tests/api/test_patient_page.py).

import { bytesToHex, concat, equal, hexToBytes, keccak256 } from "./verify.js";

/** Sign `message` of `primaryType` with the wallet and relay it.
 *
 *  - `typedData`: the served document ({domains, types, primaryTypes});
 *  - `provider`: an EIP-1193 provider; `account`: the signing address;
 *  - `relay`: {path, body(message, signature)} — where and what to POST;
 *  - `post(path, body)`: the page's authenticated POST, answering the parsed JSON.
 */
export async function signAndRelay({ typedData, provider, account, primaryType, message, relay, post }) {
  const members = typedData.types[primaryType];
  const entry = typedData.primaryTypes[primaryType];
  if (!members || !entry) throw new Error(`the service does not define ${primaryType}`);
  const document = {
    types: { EIP712Domain: typedData.types.EIP712Domain, [primaryType]: members },
    domain: typedData.domains[entry.domain],
    primaryType,
    message,
  };
  const signature = await provider.request({
    method: "eth_signTypedData_v4",
    params: [account, JSON.stringify(document)],
  });
  return post(relay.path, relay.body(message, signature));
}

// --------------------------------------------------------------------- today's messages

const ALL_RECORDS = "0x" + "00".repeat(32);
/** How long a signature may wait to be relayed (seconds). */
const DEADLINE = 600;

function now() {
  return Math.floor(Date.now() / 1000);
}

/** A grant to `grantee` of `recordRef` (null: all records) for the purpose bitmask. */
export function grant({ patient, grantee, recordRef, purposes, notBefore, expiresAt, nonce }) {
  const message = {
    patient,
    grantee,
    recordRef: recordRef || ALL_RECORDS,
    purposes: Number(purposes),
    notBefore,
    expiresAt,
    nonce: Number(nonce),
    deadline: now() + DEADLINE,
  };
  return {
    primaryType: "Grant",
    message,
    relay: {
      path: "/v1/grants",
      body: (m, signature) => ({
        patient: m.patient,
        grantee: m.grantee,
        recordRef: m.recordRef,
        purposes: m.purposes,
        notBefore: m.notBefore,
        expiresAt: m.expiresAt,
        deadline: m.deadline,
        signature,
      }),
    },
  };
}

/** The revocation of grant `grantId`. */
export function revoke({ patient, grantId, nonce }) {
  const message = {
    patient,
    grantId: Number(grantId),
    nonce: Number(nonce),
    deadline: now() + DEADLINE,
  };
  return {
    primaryType: "Revoke",
    message,
    relay: {
      path: `/v1/grants/${grantId}/revoke`,
      body: (m, signature) => ({ deadline: m.deadline, signature }),
    },
  };
}

/** Cancel every signature made and not yet used: move the consent nonce past them. */
export function cancelSignatures({ patient, nonce }) {
  const message = {
    patient,
    newNonce: Number(nonce) + 1,
    nonce: Number(nonce),
    deadline: now() + DEADLINE,
  };
  return {
    primaryType: "IncreaseNonce",
    message,
    relay: {
      path: `/v1/patients/${patient}/increase-nonce`,
      body: (m, signature) => ({
        newNonce: m.newNonce,
        deadline: m.deadline,
        signature,
      }),
    },
  };
}

// --------------------------------------------------------------------- consent version 2

/** Which consent the deployment takes for new grants: 2 when the service serves `consentV2`. */
export function version(typedData) {
  return typedData && typedData.consentV2 ? 2 : 1;
}

/** How the page names a grant: a version-2 grant's id is its commitment as a number (beyond
 *  2^53: never a JS number), a version-1 grant's its id. */
export function grantId(g) {
  return g.version === 2 ? BigInt(g.commitment).toString() : String(g.grantId);
}

/** A short label of a grant for the patient: "#12", or "#0x5f1c…e2a9" for version 2. */
export function grantLabel(g) {
  return g.version === 2 ? shortCommitment(g.commitment) : `#${g.grantId}`;
}

/** The label of the grant an event cites by id (a number, or a BigInt beyond 2^53). */
export function idLabel(id) {
  const value = BigInt(id);
  if (value <= BigInt(Number.MAX_SAFE_INTEGER)) return `#${value}`;
  return shortCommitment("0x" + value.toString(16).padStart(64, "0"));
}

function shortCommitment(commitment) {
  return `#${commitment.slice(0, 6)}…${commitment.slice(-4)}`;
}

/** Whether a version-2 grant waits to be committed on chain (a signature not used yet). */
export function pending(g) {
  return g.version === 2 && !g.committedAt && !g.revoked;
}

const ROOT_TAG = new TextEncoder().encode("medtrail consent revocation root");
/** The revocation root of this session, per account and registry: memory only. */
let roots = new Map();

/** Forget the revocation root (sign-out, another account or chain). */
export function forget() {
  roots = new Map();
}

function v2Document(typedData, primaryType, message) {
  const v2 = typedData.consentV2;
  if (!v2 || !v2.types[primaryType]) throw new Error(`the service does not define ${primaryType}`);
  return {
    types: { EIP712Domain: v2.types.EIP712Domain, [primaryType]: v2.types[primaryType] },
    domain: v2.domain,
    primaryType,
    message,
  };
}

async function signTyped(provider, account, document) {
  return provider.request({
    method: "eth_signTypedData_v4",
    params: [account, JSON.stringify(document)],
  });
}

/** The patient's revocation root: asked of the wallet once per session (a signature over
 *  RevocationKey(patient) in the ConsentRegistryV2's domain), then kept in memory. */
export async function revocationRoot({ typedData, provider, account }) {
  const domain = typedData.consentV2.domain;
  const key = `${account.toLowerCase()}:${domain.chainId}:${domain.verifyingContract.toLowerCase()}`;
  if (!roots.has(key)) {
    const document = v2Document(typedData, "RevocationKey", { patient: account });
    const signature = await signTyped(provider, account, document);
    roots.set(key, keccak256(concat(ROOT_TAG, hexToBytes(signature))));
  }
  return roots.get(key);
}

/** The secret that revokes the grant with `salt` (0x-hex): keccak256(root ‖ salt). */
export function revocationSecret(root, salt) {
  return keccak256(concat(root, hexToBytes(salt)));
}

/** Sign a version-2 grant and post it (`post(path, body)` answers the parsed JSON): a fresh
 *  random salt, the revocation hash of the secret derived from it, a commitment deadline
 *  `DEADLINE` seconds ahead. The service answers the grant ("pending" until committed). */
export async function grantV2({ typedData, provider, account, grantee, recordRef, purposes, notBefore, expiresAt, post }) {
  const root = await revocationRoot({ typedData, provider, account });
  const salt = bytesToHex(crypto.getRandomValues(new Uint8Array(32)));
  const message = {
    patient: account,
    grantee,
    recordRef: recordRef || ALL_RECORDS,
    purposes: Number(purposes),
    notBefore,
    expiresAt,
    deadline: now() + DEADLINE,
    salt,
    revocationHash: bytesToHex(keccak256(revocationSecret(root, salt))),
  };
  const signature = await signTyped(provider, account, v2Document(typedData, "Grant", message));
  return post("/v1/grants", { ...message, signature });
}

/** Revoke version-2 grant `g` (as the service serves it): derive its secret and post it; the
 *  service presents it on chain. A grant whose revocation hash this wallet does not derive
 *  (another account, chain or registry) is refused here. */
export async function revokeV2({ typedData, provider, account, grant, post }) {
  const root = await revocationRoot({ typedData, provider, account });
  const secret = revocationSecret(root, grant.salt);
  if (!equal(keccak256(secret), hexToBytes(grant.revocationHash))) {
    throw new Error("this wallet does not derive the secret of this permission (another account or registry)");
  }
  return post(`/v1/grants/${grantId(grant)}/revoke`, { secret: bytesToHex(secret) });
}

/** Cancel every signed version-2 grant not yet committed: revoke each of `grants` that is
 *  pending, so a signature the operator sits on can never become a grant. Their answers. */
export async function cancelV2({ typedData, provider, account, grants, post }) {
  const answers = [];
  for (const grant of grants.filter(pending)) {
    answers.push(await revokeV2({ typedData, provider, account, grant, post }));
  }
  return answers;
}
