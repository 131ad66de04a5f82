// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IConsentRegistryV2
/// @notice Patients' consent, with nothing on chain that links a patient to an institution, a
/// record or a purpose. The chain keeps two kinds of marks, each with its block time:
/// - a **commitment** to a grant the patient signed off chain (EIP-712, version "2" of the
///   "medtrail" domain, verifyingContract = this registry): `keccak256(abi.encode(digest,
///   salt))`, where `digest` is the grant's EIP-712 digest and `salt` a random 32-byte value
///   inside the grant, so that nobody can recompute it from guessed terms;
/// - a **revocation** mark keyed by `keccak256(abi.encode(secret))`, set by whoever presents
///   `secret`, a value only the patient can derive, whose hash (`revocationHash`) is inside
///   the signed grant.
/// The signed grant travels off chain (to the grantee and the ledger). Anyone holding it can
/// ask {grantStatusAt} whether it covered an access at a time: the answer depends only on the
/// signature (ordinary key or ERC-1271 contract wallet), the terms and the two block times, so
/// the operator can neither forge, backdate nor hide a revocation.
interface IConsentRegistryV2 {
    /// @notice The grant a patient signs (EIP-712 struct
    /// `Grant(address patient,address grantee,bytes32 recordRef,uint256 purposes,uint64 notBefore,uint64 expiresAt,uint256 deadline,bytes32 salt,bytes32 revocationHash)`).
    /// `recordRef == 0` covers every record of the patient; `purposes` is a bitmask (bit p
    /// covers purpose p); valid for notBefore <= t < expiresAt, once committed. `deadline`:
    /// the commitment must be on chain at or before this time, or the signature is void.
    struct Grant {
        address patient;
        address grantee;
        bytes32 recordRef;
        uint256 purposes;
        uint64 notBefore;
        uint64 expiresAt;
        uint256 deadline;
        bytes32 salt;
        bytes32 revocationHash;
    }

    /// @notice The access a grant is asked about.
    struct Access {
        address patient;
        address grantee;
        bytes32 recordRef;
        uint8 purpose;
        uint64 time;
    }

    /// @notice The answer to "did this signed grant cover this access at this time?", with the
    /// reason. Values 0-9 mean what they mean in version 1.
    enum GrantStatus {
        Valid,
        NotFound,
        NotYetGranted,
        WrongPatient,
        WrongGrantee,
        OutOfScope,
        PurposeNotCovered,
        NotYetValid,
        Expired,
        Revoked,
        InvalidSignature,
        CommittedTooLate
    }

    /// @notice A commit with no commitment.
    error EmptyBatch();
    /// @notice The commitment at position `index` is zero.
    error ZeroCommitment(uint256 index);
    /// @notice The grant whose revocation hash is `revocationHash` is revoked already.
    error AlreadyRevoked(bytes32 revocationHash);

    /// @notice Emitted when `commitment` is first put on chain.
    event GrantCommitted(bytes32 indexed commitment);
    /// @notice Emitted when the grant whose revocation hash is `revocationHash` is revoked.
    event GrantRevoked(bytes32 indexed revocationHash);

    /// @notice Puts commitments to signed grants on chain, each with this block's time. Anyone
    /// may call it (the service, the patient, any relayer); batching many patients' grants in
    /// one call also hides which of them belong together. A commitment already on chain keeps
    /// its first time (and emits nothing again).
    /// @dev Reverts with {EmptyBatch} or {ZeroCommitment}.
    function commit(bytes32[] calldata commitments) external;

    /// @notice Revokes, from this block on, every grant whose `revocationHash` is
    /// `keccak256(abi.encode(secret))`. Anyone who holds the secret may call it: the patient
    /// (from any address) or any relayer. A revocation before the commitment voids the grant.
    /// @dev Reverts with {AlreadyRevoked}.
    function revoke(bytes32 secret) external;

    /// @notice Block time at which `commitment` was committed; 0 if it never was.
    function committedAt(bytes32 commitment) external view returns (uint64);

    /// @notice Block time at which `revocationHash` was revoked; 0 if it never was.
    function revokedAt(bytes32 revocationHash) external view returns (uint64);

    /// @notice The EIP-712 digest the patient signs for `grant`.
    function grantDigest(Grant calldata grant) external view returns (bytes32);

    /// @notice The commitment to `grant`: `keccak256(abi.encode(grantDigest(grant), grant.salt))`.
    function commitmentOf(Grant calldata grant) external view returns (bytes32);

    /// @notice Whether `grant`, signed with `signature` and cited as `grantId` (the commitment as
    /// a number), covered `access` and, if not, why. The signature is checked now (an ERC-1271
    /// wallet answers as it does today). A view: nothing of the grant reaches the chain.
    function grantStatusAt(
        uint256 grantId,
        Grant calldata grant,
        bytes calldata signature,
        Access calldata access
    ) external view returns (GrantStatus);
}
