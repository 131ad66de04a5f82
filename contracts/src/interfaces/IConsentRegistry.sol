// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IConsentRegistry
/// @notice Patients' consent grants: which institution may access which of the patient's
/// records, for which purposes, when. A patient creates and revokes grants with their own
/// transaction, or signs an EIP-712 request that anybody (the medtrail service) relays, so that
/// patients need no ether. Signatures may come from ordinary keys or ERC-1271 contract wallets.
interface IConsentRegistry {
    /// @notice What a patient grants. `recordRef == 0` covers every record of the patient.
    /// `purposes` is a bitmask: bit p set covers purpose p. Valid for notBefore <= t < expiresAt.
    struct GrantRequest {
        address grantee;
        bytes32 recordRef;
        uint256 purposes;
        uint64 notBefore;
        uint64 expiresAt;
    }

    /// @notice A stored grant. `revokedAt == 0` while not revoked.
    struct Grant {
        address patient;
        uint64 notBefore;
        address grantee;
        uint64 expiresAt;
        uint64 createdAt;
        uint64 revokedAt;
        bytes32 recordRef;
        uint256 purposes;
    }

    /// @notice The answer to "was grant G valid for this access at time T?", with the reason.
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
        Revoked
    }

    /// @notice The relayed request's deadline has passed.
    error SignatureExpired(uint256 deadline);
    /// @notice The signature is not `patient`'s for this request, chain, contract and nonce.
    error InvalidSignature(address patient);
    /// @notice `grantee` is not a registered, active institution.
    error GranteeNotActive(address grantee);
    /// @notice The validity window [notBefore, expiresAt) is empty or inverted.
    error InvalidValidityWindow(uint64 notBefore, uint64 expiresAt);
    /// @notice The grant would already be expired when created.
    error GrantAlreadyExpired(uint64 expiresAt);
    /// @notice A grant must cover at least one purpose.
    error EmptyPurposes();
    /// @notice No grant has id `grantId`.
    error GrantNotFound(uint256 grantId);
    /// @notice Only the grant's patient may revoke it.
    error NotGrantPatient(uint256 grantId, address caller);
    /// @notice The grant is revoked already.
    error GrantAlreadyRevoked(uint256 grantId);
    /// @notice A nonce can only move forward: `requested` must be above `current`.
    error InvalidNonce(uint256 current, uint256 requested);

    /// @notice Emitted when `patient` grants `grantee` access under grant `grantId`.
    event GrantCreated(
        uint256 indexed grantId,
        address indexed patient,
        address indexed grantee,
        bytes32 recordRef,
        uint256 purposes,
        uint64 notBefore,
        uint64 expiresAt
    );
    /// @notice Emitted when `patient` revokes grant `grantId`.
    event GrantRevoked(uint256 indexed grantId, address indexed patient);
    /// @notice Emitted when `patient` moves their nonce forward, cancelling every signature made
    /// for a nonce below `newNonce`.
    event NonceIncreased(address indexed patient, uint256 oldNonce, uint256 newNonce);

    /// @notice Grants access as the caller (the patient). Returns the new grant's id (ids start at 1).
    /// @dev Reverts with {GranteeNotActive}, {InvalidValidityWindow} (notBefore >= expiresAt),
    /// {GrantAlreadyExpired} or {EmptyPurposes}.
    function grant(GrantRequest calldata request) external returns (uint256 grantId);

    /// @notice Grants access on behalf of `patient`, who signed the EIP-712 message
    /// `Grant(address patient,address grantee,bytes32 recordRef,uint256 purposes,uint64 notBefore,uint64 expiresAt,uint256 nonce,uint256 deadline)`
    /// with their current nonce. Anyone may relay it; the nonce is used up.
    /// @dev Reverts as {grant}, and with {SignatureExpired} or {InvalidSignature}.
    function grantBySig(
        address patient,
        GrantRequest calldata request,
        uint256 deadline,
        bytes calldata signature
    ) external returns (uint256 grantId);

    /// @notice Revokes grant `grantId` as the caller, who must be its patient.
    /// @dev Reverts with {GrantNotFound}, {NotGrantPatient} or {GrantAlreadyRevoked}.
    function revoke(uint256 grantId) external;

    /// @notice Revokes grant `grantId` on behalf of `patient`, who signed
    /// `Revoke(address patient,uint256 grantId,uint256 nonce,uint256 deadline)`.
    /// @dev Reverts as {revoke}, and with {SignatureExpired} or {InvalidSignature}.
    function revokeBySig(
        address patient,
        uint256 grantId,
        uint256 deadline,
        bytes calldata signature
    ) external;

    /// @notice Moves the caller's nonce to `newNonce`, cancelling every outstanding signature.
    /// @dev Reverts with {InvalidNonce} unless `newNonce` is above the current nonce.
    function increaseNonce(uint256 newNonce) external;

    /// @notice Moves `patient`'s nonce to `newNonce` on their signed behalf:
    /// `IncreaseNonce(address patient,uint256 newNonce,uint256 nonce,uint256 deadline)`.
    /// @dev `newNonce` must be above the signature's own `nonce`; reverts with {InvalidNonce},
    /// {SignatureExpired} or {InvalidSignature}.
    function increaseNonceBySig(
        address patient,
        uint256 newNonce,
        uint256 deadline,
        bytes calldata signature
    ) external;

    /// @notice The nonce `patient`'s next signed request must carry.
    function nonces(address patient) external view returns (uint256);

    /// @notice Grant `grantId`. Reverts with {GrantNotFound}.
    function getGrant(uint256 grantId) external view returns (Grant memory);

    /// @notice How many grants exist (the latest grant id).
    function grantCount() external view returns (uint256);

    /// @notice Whether grant `grantId` covered an access by `grantee` to `recordRef` of `patient`
    /// for `purpose` at time `time`, and if not, why.
    function grantStatusAt(
        uint256 grantId,
        address patient,
        address grantee,
        bytes32 recordRef,
        uint8 purpose,
        uint64 time
    ) external view returns (GrantStatus);

    /// @notice `grantStatusAt(...) == GrantStatus.Valid`.
    function isValidAt(
        uint256 grantId,
        address patient,
        address grantee,
        bytes32 recordRef,
        uint8 purpose,
        uint64 time
    ) external view returns (bool);
}
