// Every consent signature the patient page makes, in one place.
//
// The page never builds a typed-data type itself: it takes the EIP-712 domain and struct
// from the service's typed-data document (GET /v1/typed-data), has the wallet sign it with
// eth_signTypedData_v4, and posts the signature to the service's relay endpoint (the service
// pays the gas). `signAndRelay` is generic over the struct; the three descriptors below are
// the only places that know today's ConsentRegistry messages (Grant, Revoke, IncreaseNonce)
// and their relay endpoints, so that a new consent format changes this file only.

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
