// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IAuditLog
/// @notice Checkpoints (tree size, root hash) of medtrail's RFC 9162 Merkle event log. Each new
/// checkpoint must extend the previous one, which the contract checks with an RFC 9162
/// consistency proof: the chain refuses any checkpoint that rewrites or drops history.
interface IAuditLog {
    /// @notice A committed checkpoint, keyed by its tree size.
    struct Checkpoint {
        bytes32 rootHash;
        uint64 blockNumber;
        uint64 timestamp;
        /// @dev Tree size of the checkpoint before this one (0 for the first).
        uint64 previousSize;
    }

    /// @notice The zero address cannot administer the log.
    error ZeroAddress();
    /// @notice A checkpoint of an empty tree carries no information and is refused.
    error EmptyCheckpoint();
    /// @notice `treeSize` is not larger than the latest checkpoint's `latestSize`.
    error CheckpointNotLarger(uint64 latestSize, uint64 treeSize);
    /// @notice The first checkpoint has nothing to be consistent with, so takes no proof.
    error ConsistencyProofNotExpected(uint256 proofLength);
    /// @notice The proof does not show that the tree of `newSize` extends the one of `oldSize`.
    error InvalidConsistencyProof(uint64 oldSize, uint64 newSize);
    /// @notice No checkpoint was committed for `treeSize`.
    error CheckpointNotFound(uint64 treeSize);

    /// @notice Emitted when a checkpoint of `treeSize` leaves with root `rootHash` is committed.
    event CheckpointCommitted(uint64 indexed treeSize, bytes32 rootHash, uint64 previousSize);

    /// @notice Commits the checkpoint `(treeSize, rootHash)`.
    /// @dev Only LOG_OPERATOR_ROLE. `proof` is the RFC 9162 §2.1.4 consistency proof from the
    /// latest checkpoint to this one (empty for the first checkpoint). Reverts with
    /// {EmptyCheckpoint}, {CheckpointNotLarger}, {ConsistencyProofNotExpected} or
    /// {InvalidConsistencyProof}.
    function commitCheckpoint(uint64 treeSize, bytes32 rootHash, bytes32[] calldata proof) external;

    /// @notice The latest checkpoint; all zero before the first.
    function latestCheckpoint()
        external
        view
        returns (uint64 treeSize, bytes32 rootHash, uint64 blockNumber, uint64 timestamp);

    /// @notice The checkpoint of `treeSize`. Reverts with {CheckpointNotFound}.
    function checkpointAt(uint64 treeSize) external view returns (Checkpoint memory);

    /// @notice How many checkpoints have been committed.
    function checkpointCount() external view returns (uint64);

    /// @notice Whether `proof` is a valid RFC 9162 §2.1.4.2 consistency proof that the tree of
    /// `newSize` leaves with root `newRoot` extends the tree of `oldSize` with root `oldRoot`.
    function verifyConsistency(
        uint64 oldSize,
        uint64 newSize,
        bytes32 oldRoot,
        bytes32 newRoot,
        bytes32[] calldata proof
    ) external view returns (bool);
}
