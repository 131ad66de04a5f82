// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IAuditLog} from "./interfaces/IAuditLog.sol";

/// @title AuditLog
/// @notice Anchors checkpoints of medtrail's RFC 9162 (SHA-256) event log, each with the root of
/// the log's verifiable index, and verifies, on chain, that every checkpoint is consistent with
/// the one before it.
/// @dev Version 2 (IAuditLog). Also the `verifyingContract` of the EIP-712 domain institutions
/// sign events under. Stores only tree sizes, roots and the latest commit's block and time:
/// nothing personal. Per checkpoint, two new storage slots (the two roots); the latest size,
/// count, block and time share one slot, rewritten at each commit.
contract AuditLog is IAuditLog, AccessControl {
    /// @notice Role of the log operator's key, which commits checkpoints.
    bytes32 public constant LOG_OPERATOR_ROLE = keccak256("LOG_OPERATOR_ROLE");

    /// @dev The latest checkpoint's size, block and time, and the number of checkpoints: one
    /// storage slot, written once per commit.
    struct Latest {
        uint64 treeSize;
        uint64 count;
        uint64 blockNumber;
        uint64 timestamp;
    }

    mapping(uint64 treeSize => Checkpoint) private _checkpoints;
    Latest private _latest;

    /// @param admin receives DEFAULT_ADMIN_ROLE (it grants and revokes LOG_OPERATOR_ROLE).
    constructor(address admin) {
        if (admin == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @inheritdoc IAuditLog
    function commitCheckpoint(
        uint64 treeSize,
        bytes32 rootHash,
        bytes32 indexRoot,
        bytes32[] calldata proof
    ) external onlyRole(LOG_OPERATOR_ROLE) {
        if (treeSize == 0) revert EmptyCheckpoint();
        if (rootHash == 0 || indexRoot == 0) revert ZeroRoot();
        Latest memory latest = _latest;
        uint64 latestSize = latest.treeSize;
        if (latestSize == 0) {
            if (proof.length != 0) revert ConsistencyProofNotExpected(proof.length);
        } else {
            if (treeSize <= latestSize) revert CheckpointNotLarger(latestSize, treeSize);
            bytes32 latestRoot = _checkpoints[latestSize].rootHash;
            if (!_verifyConsistency(latestSize, treeSize, latestRoot, rootHash, proof)) {
                revert InvalidConsistencyProof(latestSize, treeSize);
            }
        }
        _checkpoints[treeSize] = Checkpoint({rootHash: rootHash, indexRoot: indexRoot});
        unchecked {
            _latest = Latest({
                treeSize: treeSize,
                count: latest.count + 1,
                blockNumber: uint64(block.number),
                timestamp: uint64(block.timestamp)
            });
        }
        emit CheckpointCommitted(treeSize, rootHash, indexRoot, latestSize);
    }

    /// @inheritdoc IAuditLog
    function latestCheckpoint()
        external
        view
        returns (
            uint64 treeSize,
            bytes32 rootHash,
            bytes32 indexRoot,
            uint64 blockNumber,
            uint64 timestamp
        )
    {
        Latest memory latest = _latest;
        Checkpoint storage checkpoint = _checkpoints[latest.treeSize];
        return (
            latest.treeSize,
            checkpoint.rootHash,
            checkpoint.indexRoot,
            latest.blockNumber,
            latest.timestamp
        );
    }

    /// @inheritdoc IAuditLog
    function checkpointAt(uint64 treeSize) external view returns (Checkpoint memory checkpoint) {
        checkpoint = _checkpoints[treeSize];
        if (checkpoint.rootHash == 0) revert CheckpointNotFound(treeSize);
    }

    /// @inheritdoc IAuditLog
    function checkpointCount() external view returns (uint64) {
        return _latest.count;
    }

    /// @inheritdoc IAuditLog
    function verifyConsistency(
        uint64 oldSize,
        uint64 newSize,
        bytes32 oldRoot,
        bytes32 newRoot,
        bytes32[] calldata proof
    ) external view returns (bool) {
        return _verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof);
    }

    /// @dev RFC 9162 §2.1.4.2, for 0 < oldSize < newSize. When oldSize is a power of two the
    /// RFC prepends oldRoot to the proof; we start from oldRoot instead of copying the array.
    function _verifyConsistency(
        uint64 oldSize,
        uint64 newSize,
        bytes32 oldRoot,
        bytes32 newRoot,
        bytes32[] calldata proof
    ) private view returns (bool) {
        if (oldSize == 0 || oldSize >= newSize) return false;
        uint256 next;
        bytes32 fr;
        if (oldSize & (oldSize - 1) == 0) {
            fr = oldRoot;
        } else {
            if (proof.length == 0) return false;
            fr = proof[0];
            next = 1;
        }
        bytes32 sr = fr;
        uint64 fn = oldSize - 1;
        uint64 sn = newSize - 1;
        while (fn & 1 == 1) {
            fn >>= 1;
            sn >>= 1;
        }
        for (; next < proof.length; ++next) {
            if (sn == 0) return false;
            bytes32 c = proof[next];
            if (fn & 1 == 1 || fn == sn) {
                fr = _hashChildren(c, fr);
                sr = _hashChildren(c, sr);
                while (fn & 1 == 0 && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            } else {
                sr = _hashChildren(sr, c);
            }
            fn >>= 1;
            sn >>= 1;
        }
        return sn == 0 && fr == oldRoot && sr == newRoot;
    }

    /// @dev RFC 9162 interior node hash: SHA-256(0x01 || left || right), through the
    /// precompile at 0x02, using memory past the free pointer as scratch space.
    function _hashChildren(bytes32 left, bytes32 right) private view returns (bytes32 result) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore8(ptr, 0x01)
            mstore(add(ptr, 1), left)
            mstore(add(ptr, 33), right)
            if iszero(staticcall(gas(), 0x02, ptr, 65, 0x00, 0x20)) {
                revert(0, 0)
            }
            result := mload(0x00)
        }
    }
}
