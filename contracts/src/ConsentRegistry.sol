// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {IConsentRegistry} from "./interfaces/IConsentRegistry.sol";
import {IInstitutionRegistry} from "./interfaces/IInstitutionRegistry.sol";

/// @title ConsentRegistry
/// @notice Patients' consent grants, created and revoked by the patient's own transaction or by
/// a relayed EIP-712 signature (plain key or ERC-1271 contract wallet).
/// @dev Replay protection: the EIP-712 domain binds chain id and this contract's address; each
/// signed request carries the patient's current nonce and a deadline. Nonces are sequential,
/// and a patient can jump theirs forward (as EAS's `increaseNonce`) to cancel every outstanding
/// signature at once, which OpenZeppelin's `Nonces` (one step at a time) cannot do. Signature
/// malleability: `SignatureChecker` uses OpenZeppelin's ECDSA, which rejects high-s signatures.
/// Stores no personal data: patient wallet addresses, institution addresses, opaque record refs.
contract ConsentRegistry is IConsentRegistry, EIP712 {
    /// @dev keccak256("Grant(address patient,address grantee,bytes32 recordRef,uint256 purposes,uint64 notBefore,uint64 expiresAt,uint256 nonce,uint256 deadline)")
    bytes32 public constant GRANT_TYPEHASH =
        keccak256(
            "Grant(address patient,address grantee,bytes32 recordRef,uint256 purposes,uint64 notBefore,uint64 expiresAt,uint256 nonce,uint256 deadline)"
        );
    /// @dev keccak256("Revoke(address patient,uint256 grantId,uint256 nonce,uint256 deadline)")
    bytes32 public constant REVOKE_TYPEHASH =
        keccak256("Revoke(address patient,uint256 grantId,uint256 nonce,uint256 deadline)");
    /// @dev keccak256("IncreaseNonce(address patient,uint256 newNonce,uint256 nonce,uint256 deadline)")
    bytes32 public constant INCREASE_NONCE_TYPEHASH =
        keccak256("IncreaseNonce(address patient,uint256 newNonce,uint256 nonce,uint256 deadline)");

    /// @notice The registry grantees must be active in when a grant is created.
    IInstitutionRegistry public immutable institutions;

    mapping(uint256 grantId => Grant) private _grants;
    mapping(address patient => uint256) private _nonces;
    uint256 private _grantCount;

    constructor(IInstitutionRegistry institutionRegistry) EIP712("medtrail", "1") {
        institutions = institutionRegistry;
    }

    /// @notice The EIP-712 domain separator of this contract on this chain.
    // solhint-disable-next-line func-name-mixedcase
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @inheritdoc IConsentRegistry
    function grant(GrantRequest calldata request) external returns (uint256) {
        return _createGrant(msg.sender, request);
    }

    /// @inheritdoc IConsentRegistry
    function grantBySig(
        address patient,
        GrantRequest calldata request,
        uint256 deadline,
        bytes calldata signature
    ) external returns (uint256) {
        bytes32 structHash = keccak256(
            abi.encode(
                GRANT_TYPEHASH,
                patient,
                request.grantee,
                request.recordRef,
                request.purposes,
                request.notBefore,
                request.expiresAt,
                _useNonce(patient),
                deadline
            )
        );
        _checkSignature(patient, structHash, deadline, signature);
        return _createGrant(patient, request);
    }

    /// @inheritdoc IConsentRegistry
    function revoke(uint256 grantId) external {
        _revoke(msg.sender, grantId);
    }

    /// @inheritdoc IConsentRegistry
    function revokeBySig(
        address patient,
        uint256 grantId,
        uint256 deadline,
        bytes calldata signature
    ) external {
        bytes32 structHash = keccak256(
            abi.encode(REVOKE_TYPEHASH, patient, grantId, _useNonce(patient), deadline)
        );
        _checkSignature(patient, structHash, deadline, signature);
        _revoke(patient, grantId);
    }

    /// @inheritdoc IConsentRegistry
    function increaseNonce(uint256 newNonce) external {
        _increaseNonce(msg.sender, newNonce);
    }

    /// @inheritdoc IConsentRegistry
    function increaseNonceBySig(
        address patient,
        uint256 newNonce,
        uint256 deadline,
        bytes calldata signature
    ) external {
        uint256 signedNonce = _useNonce(patient);
        bytes32 structHash = keccak256(
            abi.encode(INCREASE_NONCE_TYPEHASH, patient, newNonce, signedNonce, deadline)
        );
        _checkSignature(patient, structHash, deadline, signature);
        // The signature's own nonce is used up first; newNonce is compared with the nonce the
        // patient signed at, so asking for signedNonce + 1 is valid (and changes nothing more).
        if (newNonce <= signedNonce) revert InvalidNonce(signedNonce, newNonce);
        _nonces[patient] = newNonce;
        emit NonceIncreased(patient, signedNonce, newNonce);
    }

    /// @inheritdoc IConsentRegistry
    function nonces(address patient) external view returns (uint256) {
        return _nonces[patient];
    }

    /// @inheritdoc IConsentRegistry
    function getGrant(uint256 grantId) external view returns (Grant memory stored) {
        stored = _grants[grantId];
        if (stored.patient == address(0)) revert GrantNotFound(grantId);
    }

    /// @inheritdoc IConsentRegistry
    function grantCount() external view returns (uint256) {
        return _grantCount;
    }

    /// @inheritdoc IConsentRegistry
    function grantStatusAt(
        uint256 grantId,
        address patient,
        address grantee,
        bytes32 recordRef,
        uint8 purpose,
        uint64 time
    ) public view returns (GrantStatus) {
        Grant storage stored = _grants[grantId];
        if (stored.patient == address(0)) return GrantStatus.NotFound;
        if (time < stored.createdAt) return GrantStatus.NotYetGranted;
        if (stored.patient != patient) return GrantStatus.WrongPatient;
        if (stored.grantee != grantee) return GrantStatus.WrongGrantee;
        if (stored.recordRef != bytes32(0) && stored.recordRef != recordRef) {
            return GrantStatus.OutOfScope;
        }
        if (stored.purposes & (uint256(1) << purpose) == 0) return GrantStatus.PurposeNotCovered;
        if (stored.revokedAt != 0 && time >= stored.revokedAt) return GrantStatus.Revoked;
        if (time < stored.notBefore) return GrantStatus.NotYetValid;
        if (time >= stored.expiresAt) return GrantStatus.Expired;
        return GrantStatus.Valid;
    }

    /// @inheritdoc IConsentRegistry
    function isValidAt(
        uint256 grantId,
        address patient,
        address grantee,
        bytes32 recordRef,
        uint8 purpose,
        uint64 time
    ) external view returns (bool) {
        return grantStatusAt(grantId, patient, grantee, recordRef, purpose, time) == GrantStatus.Valid;
    }

    function _createGrant(address patient, GrantRequest calldata request) private returns (uint256 grantId) {
        if (request.purposes == 0) revert EmptyPurposes();
        if (request.notBefore >= request.expiresAt) {
            revert InvalidValidityWindow(request.notBefore, request.expiresAt);
        }
        if (request.expiresAt <= block.timestamp) revert GrantAlreadyExpired(request.expiresAt);
        if (!institutions.isActive(request.grantee)) revert GranteeNotActive(request.grantee);
        grantId = ++_grantCount;
        _grants[grantId] = Grant({
            patient: patient,
            notBefore: request.notBefore,
            grantee: request.grantee,
            expiresAt: request.expiresAt,
            createdAt: uint64(block.timestamp),
            revokedAt: 0,
            recordRef: request.recordRef,
            purposes: request.purposes
        });
        emit GrantCreated(
            grantId,
            patient,
            request.grantee,
            request.recordRef,
            request.purposes,
            request.notBefore,
            request.expiresAt
        );
    }

    function _revoke(address patient, uint256 grantId) private {
        Grant storage stored = _grants[grantId];
        if (stored.patient == address(0)) revert GrantNotFound(grantId);
        if (stored.patient != patient) revert NotGrantPatient(grantId, patient);
        if (stored.revokedAt != 0) revert GrantAlreadyRevoked(grantId);
        stored.revokedAt = uint64(block.timestamp);
        emit GrantRevoked(grantId, patient);
    }

    function _increaseNonce(address patient, uint256 newNonce) private {
        uint256 current = _nonces[patient];
        if (newNonce <= current) revert InvalidNonce(current, newNonce);
        _nonces[patient] = newNonce;
        emit NonceIncreased(patient, current, newNonce);
    }

    function _useNonce(address patient) private returns (uint256 current) {
        current = _nonces[patient];
        unchecked {
            _nonces[patient] = current + 1;
        }
    }

    function _checkSignature(
        address patient,
        bytes32 structHash,
        uint256 deadline,
        bytes calldata signature
    ) private view {
        if (block.timestamp > deadline) revert SignatureExpired(deadline);
        if (
            patient == address(0) ||
            !SignatureChecker.isValidSignatureNowCalldata(patient, _hashTypedDataV4(structHash), signature)
        ) {
            revert InvalidSignature(patient);
        }
    }
}
