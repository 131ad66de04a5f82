// The patient page's proof checks, in the browser (no I/O here: callers pass what they read).
//
// * RFC 9162 inclusion proofs (§2.1.3.2), hashed with WebCrypto's SHA-256;
// * EIP-712 digests of flat structs (every medtrail struct is one), hashed with Keccak-256
//   from the vendored @noble/hashes (vendor/noble-hashes, see VENDORED.md);
// * the verifiable index's lookup proofs (docs/index.md §4), i.e. "this list is all of them";
// * the ABI of the two AuditLog reads the page makes (latestCheckpoint, checkpointAt).
//
// Mirrors ledger/merkle.py, ledger/eip712.py and ledger/index.py; tests/api/test_patient_page.py
// runs it in chromium against the Python implementation's answers and docs/index.md's vectors.

import { keccak_256 } from "./vendor/noble-hashes/sha3.js";

const enc = new TextEncoder();

export class ProofError extends Error {}

// ------------------------------------------------------------------------- bytes

export function hexToBytes(hex) {
  const h = hex.startsWith("0x") ? hex.slice(2) : hex;
  if (h.length % 2 !== 0 || /[^0-9a-fA-F]/.test(h)) throw new ProofError(`not hex: ${hex}`);
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function bytesToHex(bytes) {
  return "0x" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

function uint64be(n) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

function word(value) {
  // A uint as a 32-byte big-endian word.
  let v = BigInt(value);
  if (v < 0n || v >= 1n << 256n) throw new ProofError(`not a uint256: ${value}`);
  const out = new Uint8Array(32);
  for (let i = 31; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** JSON.parse, keeping integers beyond 2^53 (a claim's uint256 amount) exact as BigInt where
 *  the browser gives the source text, so that a digest recomputed from them is the signed one. */
export function parseJson(text) {
  return JSON.parse(text, (_key, value, context) => {
    if (typeof value === "number" && !Number.isSafeInteger(value) && context?.source) {
      if (/^-?\d+$/.test(context.source)) return BigInt(context.source);
    }
    return value;
  });
}

export async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

export function keccak256(bytes) {
  return keccak_256(bytes);
}

// ------------------------------------------------------------------------- RFC 9162

export async function leafHash(leaf) {
  return sha256(new Uint8Array([0]), leaf);
}

export async function nodeHash(left, right) {
  return sha256(new Uint8Array([1]), left, right);
}

/** The root an RFC 9162 §2.1.3.2 inclusion proof yields for `leaf` (a leaf hash) at `index`
 *  in a tree of `size`; throws ProofError when the proof cannot be for that position. */
export async function rootFromInclusionProof(leaf, index, size, path) {
  if (!(Number.isInteger(index) && Number.isInteger(size)) || index < 0 || index >= size) {
    throw new ProofError(`leaf ${index} is not in a tree of ${size}`);
  }
  let fn = BigInt(index);
  let sn = BigInt(size - 1);
  let r = leaf;
  for (const p of path) {
    if (p.length !== 32) throw new ProofError("a proof hash is not 32 bytes");
    if (sn === 0n) throw new ProofError("the inclusion proof is too long");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new ProofError("the inclusion proof is too short");
  return r;
}

/** RFC 9162 Merkle tree hash of a list of leaves (byte strings). */
export async function merkleRoot(leaves) {
  if (leaves.length === 0) return sha256();
  if (leaves.length === 1) return leafHash(leaves[0]);
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return nodeHash(await merkleRoot(leaves.slice(0, k)), await merkleRoot(leaves.slice(k)));
}

// ------------------------------------------------------------------------- EIP-712

function encodeType(name, members) {
  return `${name}(${members.map((m) => `${m.type} ${m.name}`).join(",")})`;
}

function encodeValue(type, value) {
  if (type === "string") return keccak256(enc.encode(value));
  if (type === "bytes") return keccak256(hexToBytes(value));
  if (type === "address") {
    const b = hexToBytes(value);
    if (b.length !== 20) throw new ProofError(`not an address: ${value}`);
    return concat(new Uint8Array(12), b);
  }
  if (type === "bool") return word(value ? 1 : 0);
  if (/^uint\d+$/.test(type)) {
    const bits = Number(type.slice(4));
    const v = BigInt(value);
    if (v < 0n || v >= 1n << BigInt(bits)) throw new ProofError(`not a ${type}: ${value}`);
    return word(v);
  }
  if (type === "bytes32") {
    const b = hexToBytes(value);
    if (b.length !== 32) throw new ProofError(`not a bytes32: ${value}`);
    return b;
  }
  throw new ProofError(`type ${type} is not one medtrail's flat structs use`);
}

/** hashStruct(message) of a flat struct (atomic members only). */
export function hashStruct(name, members, message) {
  const typeHash = keccak256(enc.encode(encodeType(name, members)));
  const words = members.map((m) => {
    if (!(m.name in message)) throw new ProofError(`${name}.${m.name} is missing`);
    return encodeValue(m.type, message[m.name]);
  });
  return keccak256(concat(typeHash, ...words));
}

export function domainSeparator(types, domain) {
  return hashStruct("EIP712Domain", types.EIP712Domain, domain);
}

/** The EIP-712 digest of `message` of `primaryType`, with the served typed-data document. */
export function typedDataDigest(typedData, primaryType, message) {
  const members = typedData.types[primaryType];
  if (!members) throw new ProofError(`no typed-data definition of ${primaryType}`);
  const key = typedData.primaryTypes[primaryType].domain;
  const separator = domainSeparator(typedData.types, typedData.domains[key]);
  return keccak256(
    concat(new Uint8Array([0x19, 0x01]), separator, hashStruct(primaryType, members, message)),
  );
}

// ------------------------------------------------------------------------- the index

const TAG = (name) => enc.encode(`medtrail/index/${name}/v1`);

export async function patientKey(address) {
  const b = hexToBytes(address);
  if (b.length !== 20) throw new ProofError(`not an address: ${address}`);
  return sha256(TAG("patient"), b);
}

export async function recordKey(recordRef) {
  return sha256(TAG("record"), hexToBytes(recordRef));
}

export async function emptyHash() {
  return sha256(TAG("empty"));
}

export async function listRoot(leafIndexes) {
  return merkleRoot(leafIndexes.map(uint64be));
}

async function valueHash(size, root) {
  return sha256(TAG("value"), uint64be(size), root);
}

function bit(key, i) {
  return (key[i >> 3] >> (7 - (i & 7))) & 1;
}

const EMPTY = 0;
const LEAF = 1;
const OTHER_LEAF = 2;

/** LookupProof.from_bytes (docs/index.md §4, "Encoding"). */
export async function decodeLookupProof(bytes) {
  if (bytes.length < 3) throw new ProofError("a lookup proof is too short");
  const depth = (bytes[0] << 8) | bytes[1];
  if (depth > 256) throw new ProofError("a lookup proof deeper than 256");
  const mapLen = Math.ceil(depth / 8);
  let at = 2;
  const bitmap = bytes.slice(at, at + mapLen);
  at += mapLen;
  const empty = await emptyHash();
  const siblings = [];
  for (let i = 0; i < mapLen * 8; i++) {
    const set = (bitmap[i >> 3] >> (7 - (i & 7))) & 1;
    if (i >= depth) {
      if (set) throw new ProofError("a bitmap bit beyond the proof's depth");
      continue;
    }
    if (set) {
      if (at + 32 > bytes.length) throw new ProofError("a lookup proof is truncated");
      siblings.push(bytes.slice(at, at + 32));
      at += 32;
    } else {
      siblings.push(empty);
    }
  }
  if (at >= bytes.length) throw new ProofError("a lookup proof has no terminal");
  const terminal = bytes[at++];
  let other = null;
  if (terminal === OTHER_LEAF) {
    if (at + 64 !== bytes.length) throw new ProofError("a lookup proof of the wrong length");
    other = { key: bytes.slice(at, at + 32), valueHash: bytes.slice(at + 32, at + 64) };
  } else if (terminal === EMPTY || terminal === LEAF) {
    if (at !== bytes.length) throw new ProofError("a lookup proof of the wrong length");
  } else {
    throw new ProofError(`an unknown terminal ${terminal}`);
  }
  return { depth, siblings, terminal, other };
}

/** index.verify_list_lookup: `list` is the whole list the index at `root` (log size `size`)
 *  holds for `key`; throws ProofError otherwise. */
export async function verifyListLookup(key, list, proofBytes, root, size) {
  for (let i = 0; i < list.length; i++) {
    if (!Number.isInteger(list[i]) || list[i] < 0 || list[i] >= size) {
      throw new ProofError(`the list names leaf ${list[i]}, beyond the log of ${size}`);
    }
    if (i > 0 && list[i] <= list[i - 1]) throw new ProofError("the list is out of order");
  }
  const proof = await decodeLookupProof(proofBytes);
  const empty = await emptyHash();
  if (proof.terminal === LEAF && list.length === 0) {
    throw new ProofError("a proof of presence for a list claimed empty");
  }
  if (proof.terminal !== LEAF && list.length > 0) {
    throw new ProofError("a proof of absence for a list that is not empty");
  }
  if (proof.depth > 0 && equal(proof.siblings[0], empty)) {
    throw new ProofError("a non-canonical lookup proof");
  }
  let x;
  if (proof.terminal === LEAF) {
    const head = await valueHash(list.length, await listRoot(list));
    x = await sha256(TAG("leaf"), key, head);
  } else if (proof.terminal === EMPTY) {
    x = empty;
  } else {
    if (equal(proof.other.key, key)) throw new ProofError("an absence proof ends at the key");
    for (let i = 0; i < proof.depth; i++) {
      if (bit(proof.other.key, i) !== bit(key, i)) {
        throw new ProofError("an absence proof off the key's path");
      }
    }
    x = await sha256(TAG("leaf"), proof.other.key, proof.other.valueHash);
  }
  for (let i = 0; i < proof.depth; i++) {
    const s = proof.siblings[i];
    x = bit(key, proof.depth - 1 - i)
      ? await sha256(TAG("node"), s, x)
      : await sha256(TAG("node"), x, s);
  }
  if (!equal(x, root)) throw new ProofError("the list does not lead to the index root");
}

// ------------------------------------------------------------------------- AuditLog ABI

export function selector(signature) {
  return keccak256(enc.encode(signature)).slice(0, 4);
}

export function latestCheckpointCall() {
  return bytesToHex(selector("latestCheckpoint()"));
}

export function checkpointAtCall(treeSize) {
  return bytesToHex(concat(selector("checkpointAt(uint64)"), word(treeSize)));
}

function words(hex, count) {
  const b = hexToBytes(hex);
  if (b.length < 32 * count) throw new ProofError("the chain's answer is too short");
  return Array.from({ length: count }, (_, i) => b.slice(32 * i, 32 * i + 32));
}

function wordToNumber(w) {
  return Number(BigInt(bytesToHex(w)));
}

export function decodeLatestCheckpoint(hex) {
  const [size, root, indexRoot, block, time] = words(hex, 5);
  return {
    treeSize: wordToNumber(size),
    rootHash: root,
    indexRoot,
    blockNumber: wordToNumber(block),
    timestamp: wordToNumber(time),
  };
}

export function decodeCheckpointAt(hex) {
  const [root, indexRoot] = words(hex, 2);
  return { rootHash: root, indexRoot };
}

// ------------------------------------------------------------------------- one event

/** Check one served event (EventOut) against a checkpoint root read elsewhere.
 *  `trusted(treeSize)` returns {rootHash} of the checkpoint of that size (or null).
 *  Answers {state: "verified"|"failed"|"pending"|"unchecked", detail}. */
export async function checkEvent(typedData, view, trusted) {
  const bundle = view.bundle;
  const signed = bundle.event;
  let digest;
  try {
    digest = typedDataDigest(typedData, signed.type, signed.event);
  } catch (err) {
    return { state: "failed", detail: `the entry cannot be hashed: ${err.message}` };
  }
  if (!equal(digest, hexToBytes(bundle.eventDigest))) {
    return {
      state: "failed",
      detail:
        "the entry shown is not the one that was logged: its fingerprint (EIP-712 digest) " +
        "differs from the one the log holds",
    };
  }
  if (!bundle.checkpoint) {
    return {
      state: "pending",
      detail:
        "logged, not yet anchored on the chain: nothing proves it yet (until it is anchored, " +
        "it is only the service's word)",
    };
  }
  const size = bundle.checkpoint.treeSize;
  const checkpoint = await trusted(size);
  if (!checkpoint) {
    return {
      state: "failed",
      detail: `the checkpoint of ${size} entries the proof names is not on the chain`,
    };
  }
  try {
    if (bundle.treeSize !== size) throw new ProofError("the proof is for another tree size");
    const root = await rootFromInclusionProof(
      await leafHash(digest),
      bundle.leafIndex,
      size,
      bundle.inclusionPath.map(hexToBytes),
    );
    if (!equal(root, checkpoint.rootHash)) {
      throw new ProofError("the proof does not lead to the checkpoint's root");
    }
  } catch (err) {
    if (!(err instanceof ProofError)) throw err;
    return { state: "failed", detail: `the inclusion proof fails: ${err.message}` };
  }
  return {
    state: "verified",
    detail:
      `entry ${bundle.leafIndex} is in the log of ${size} entries whose root the chain ` +
      "holds, and it is exactly the entry shown",
  };
}

// ------------------------------------------------------------------------- the whole history

/** The served entry, judged against who is signed in and the chain's latest checkpoint
 *  (`latestSize`, null: none): `result` is checkEvent's answer. An entry about another patient
 *  fails; so does one served as not anchored whose leaf the latest checkpoint already covers
 *  (ledger/verify.py's proof-missing; `race`: it may have been read just before that
 *  checkpoint landed, so the history is read once more before this is believed). */
export function judgeEntry(result, view, me, latestSize) {
  const patient = view.bundle.event.event.patient;
  if (typeof patient !== "string" || patient.toLowerCase() !== me.toLowerCase()) {
    return {
      state: "failed",
      detail:
        "this entry is about another patient, not you: the service should not show it here " +
        "(tell your provider or a regulator)",
    };
  }
  const leaf = view.bundle.leafIndex;
  if (result.state === "pending" && latestSize !== null && leaf < latestSize) {
    return {
      state: "failed",
      race: true,
      detail:
        `the service says entry ${leaf} is not anchored yet, but the chain's checkpoint of ` +
        `${latestSize} entries already covers it: its proof is missing, so what is shown ` +
        "cannot be trusted (the real entry may be hidden behind it)",
    };
  }
  return result;
}

/** The index proof to check the history with: of the page with the largest checkpoint (one
 *  may land between two pages); null when no page had one. */
export function largestIndex(proofs) {
  let best = null;
  for (const p of proofs) {
    if (p && (best === null || p.treeSize > best.treeSize)) best = p;
  }
  return best;
}

function count(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function some(leaves) {
  const shown = leaves.slice(0, 5).join(", ");
  return leaves.length > 5 ? `${shown} and ${leaves.length - 5} more` : shown;
}

/** Is the served history the whole history? The rules of ledger/completeness.py, as strict:
 *
 *  * `index-proof-missing`: the chain holds a checkpoint (`latest`) and no index proof was
 *    served (`index` null);
 *  * `trail-incomplete`: the proof is for another key, or does not lead to the index root the
 *    chain holds at its checkpoint; a listed leaf is not shown by an entry whose inclusion proof
 *    verified against the chain (`entries[i].state === "verified"`); an entry below the
 *    checkpoint is shown that the list does not hold; an entry is about another patient;
 *  * `checkpoint-not-on-chain`: `at(index.treeSize)` has no index root;
 *  * `trail-outdated`: the proof's checkpoint is older than the chain's latest (`race`: the
 *    history may have been read just before a checkpoint landed).
 *
 *  `key` is patientKey(me); `entries` are [{leafIndex, state, aboutMe}]; `where` says what
 *  the roots were read from ({name: "the chain", on: "on the chain"}).
 *  Answers {state: "verified"|"failed"|"none", text, race}. */
export async function checkCompleteness({ key, index, latest, at, entries, where }) {
  const fails = (problems, race = false) => ({
    state: "failed",
    race,
    text:
      `Completeness FAILS: ${problems.join("; ")}. Entries about you may be hidden from this ` +
      "page: tell your provider or a regulator.",
  });
  if (!index) {
    if (!latest) {
      return {
        state: "none",
        race: false,
        text: "Completeness cannot be checked yet: no checkpoint covers your history.",
      };
    }
    return fails([
      `${where.name} holds a checkpoint of ${latest.treeSize} entries, but the service did not ` +
        "send the proof that the list of entries about you is whole",
    ]);
  }
  let keyServed;
  try {
    keyServed = hexToBytes(index.key || "");
  } catch {
    keyServed = new Uint8Array();
  }
  if (!equal(keyServed, key)) {
    return fails(["the proof the service sent is for another list than the list about you"]);
  }
  const size = index.treeSize;
  const checkpoint = await at(size);
  if (!checkpoint || !checkpoint.indexRoot) {
    return fails([
      `the proof names a checkpoint of ${size} entries that ${where.name} does not hold`,
    ]);
  }
  try {
    const proof = hexToBytes(index.proof);
    await verifyListLookup(key, index.leafIndexes, proof, checkpoint.indexRoot, size);
  } catch (err) {
    if (!(err instanceof ProofError)) throw err;
    return fails([
      `the list of entries about you that the service sent is not the one committed at ` +
        `the checkpoint of ${size} entries (${err.message})`,
    ]);
  }
  const problems = [];
  const proven = new Set(entries.filter((e) => e.state === "verified").map((e) => e.leafIndex));
  const shown = new Set(entries.map((e) => e.leafIndex));
  const listed = new Set(index.leafIndexes);
  const missing = index.leafIndexes.filter((leaf) => !shown.has(leaf));
  const unproven = index.leafIndexes.filter((leaf) => shown.has(leaf) && !proven.has(leaf));
  const extra = [...shown].filter((leaf) => leaf < size && !listed.has(leaf)).sort((a, b) => a - b);
  const others = entries.filter((e) => !e.aboutMe).length;
  if (missing.length) {
    problems.push(
      `${missing.length} of the ${index.leafIndexes.length} entries the chain's index lists ` +
        `about you ${missing.length === 1 ? "is" : "are"} not shown (entry ${some(missing)})`,
    );
  }
  if (unproven.length) {
    problems.push(
      `${count(unproven.length, "entry", "entries")} the index lists about you ` +
        `${unproven.length === 1 ? "is" : "are"} shown without a proof that checks ` +
        `(entry ${some(unproven)}): what is shown may not be what was logged`,
    );
  }
  if (extra.length) {
    problems.push(
      `${count(extra.length, "entry is", "entries are")} shown that the index does not list ` +
        "about you " +
        `(entry ${some(extra)})`,
    );
  }
  if (others) {
    problems.push(`${count(others, "entry shown is", "entries shown are")} about another patient`);
  }
  const outdated = latest && latest.treeSize > size;
  if (outdated) {
    problems.push(
      `the proof that the list is whole is for an older checkpoint (${size} entries) than ` +
        `the latest one ${where.name} holds (${latest.treeSize} entries): entries logged ` +
        "since are not covered",
    );
  }
  if (problems.length) return fails(problems, Boolean(outdated));
  return {
    state: "verified",
    race: false,
    text:
      `Complete: the index committed ${where.on} at ${size} entries lists exactly the ` +
      `${index.leafIndexes.length} entries about you shown here, each proven.`,
  };
}
