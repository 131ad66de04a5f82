// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {IConsentRegistryV2} from "./interfaces/IConsentRegistryV2.sol";

/// @title ConsentRegistryV2
/// @notice Patients' consent as salted commitments and revocation marks, each with its block
/// time: no patient, institution, record reference or purpose ever reaches the chain (see
/// {IConsentRegistryV2}). Version 2 of ConsentRegistry (docs/upgrading.md).
/// @dev No roles: committing or revoking needs no permission, because a commitment means
/// nothing without the patient's signature over the grant it commits to, and a revocation
/// needs the patient's secret. Replay: the EIP-712 domain (name "medtrail", version "2") binds
/// chain id and this contract. Instead of version 1's nonces (which would name the patient on
/// chain), each signed grant carries a deadline for its commitment, and a patient cancels a
/// signed grant not yet committed by revoking it: a revocation before the commitment voids the
/// grant for good. Signature malleability: `SignatureChecker` uses OpenZeppelin's ECDSA, which
/// rejects high-s signatures.
contract ConsentRegistryV2 is IConsentRegistryV2, EIP712 {
    /// @dev keccak256("Grant(address patient,address grantee,bytes32 recordRef,uint256 purposes,uint64 notBefore,uint64 expiresAt,uint256 deadline,bytes32 salt,bytes32 revocationHash)")
    bytes32 public constant GRANT_TYPEHASH =
        keccak256(
            "Grant(address patient,address grantee,bytes32 recordRef,uint256 purposes,uint64 notBefore,uint64 expiresAt,uint256 deadline,bytes32 salt,bytes32 revocationHash)"
        );

    mapping(bytes32 commitment => uint64) private _committedAt;
    mapping(bytes32 revocationHash => uint64) private _revokedAt;

    constructor() EIP712("medtrail", "2") {}

    /// @notice The EIP-712 domain separator of this contract on this chain.
    // solhint-disable-next-line func-name-mixedcase
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @inheritdoc IConsentRegistryV2
    function commit(bytes32[] calldata commitments) external {
        uint256 count = commitments.length;
        if (count == 0) revert EmptyBatch();
        uint64 now_ = uint64(block.timestamp);
        for (uint256 i = 0; i < count; ++i) {
            bytes32 commitment = commitments[i];
            if (commitment == bytes32(0)) revert ZeroCommitment(i);
            if (_committedAt[commitment] == 0) {
                _committedAt[commitment] = now_;
                emit GrantCommitted(commitment);
            }
        }
    }

    /// @inheritdoc IConsentRegistryV2
    function revoke(bytes32 secret) external {
        bytes32 revocationHash = keccak256(abi.encode(secret));
        if (_revokedAt[revocationHash] != 0) revert AlreadyRevoked(revocationHash);
        _revokedAt[revocationHash] = uint64(block.timestamp);
        emit GrantRevoked(revocationHash);
    }

    /// @inheritdoc IConsentRegistryV2
    function committedAt(bytes32 commitment) external view returns (uint64) {
        return _committedAt[commitment];
    }

    /// @inheritdoc IConsentRegistryV2
    function revokedAt(bytes32 revocationHash) external view returns (uint64) {
        return _revokedAt[revocationHash];
    }

    /// @inheritdoc IConsentRegistryV2
    function grantDigest(Grant calldata grant) public view returns (bytes32) {
        return _hashTypedDataV4(_structHash(grant));
    }

    /// @inheritdoc IConsentRegistryV2
    function commitmentOf(Grant calldata grant) public view returns (bytes32) {
        return keccak256(abi.encode(grantDigest(grant), grant.salt));
    }

    /// @inheritdoc IConsentRegistryV2
    function grantStatusAt(
        uint256 grantId,
        Grant calldata grant,
        bytes calldata signature,
        Access calldata access
    ) external view returns (GrantStatus) {
        bytes32 digest = grantDigest(grant);
        bytes32 commitment = keccak256(abi.encode(digest, grant.salt));
        uint64 committed = _committedAt[commitment];
        if (uint256(commitment) != grantId || committed == 0) return GrantStatus.NotFound;
        if (
            grant.patient == address(0) ||
            !SignatureChecker.isValidSignatureNowCalldata(grant.patient, digest, signature)
        ) {
            return GrantStatus.InvalidSignature;
        }
        if (committed > grant.deadline) return GrantStatus.CommittedTooLate;
        if (access.time < committed) return GrantStatus.NotYetGranted;
        if (grant.patient != access.patient) return GrantStatus.WrongPatient;
        if (grant.grantee != access.grantee) return GrantStatus.WrongGrantee;
        if (grant.recordRef != bytes32(0) && grant.recordRef != access.recordRef) {
            return GrantStatus.OutOfScope;
        }
        if (grant.purposes & (uint256(1) << access.purpose) == 0) return GrantStatus.PurposeNotCovered;
        uint64 revoked = _revokedAt[grant.revocationHash];
        if (revoked != 0 && access.time >= revoked) return GrantStatus.Revoked;
        if (access.time < grant.notBefore) return GrantStatus.NotYetValid;
        if (access.time >= grant.expiresAt) return GrantStatus.Expired;
        return GrantStatus.Valid;
    }

    function _structHash(Grant calldata grant) private pure returns (bytes32) {
        return
            keccak256(
                abi.encode(
                    GRANT_TYPEHASH,
                    grant.patient,
                    grant.grantee,
                    grant.recordRef,
                    grant.purposes,
                    grant.notBefore,
                    grant.expiresAt,
                    grant.deadline,
                    grant.salt,
                    grant.revocationHash
                )
            );
    }
}
