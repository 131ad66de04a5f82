// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IAuditLog
/// @notice Checkpoints of medtrail's RFC 9162 Merkle event log, each with the root of the log's
/// verifiable index at the same size. Each new checkpoint must extend the previous one, which
/// the contract checks with an RFC 9162 consistency proof: the chain refuses any checkpoint
/// that rewrites or drops history. The index root is committed with the log root so that it
/// cannot be changed later; how it was built cannot be checked on chain (the whole-log audit
/// rebuilds it from the log and compares).
/// @dev Version 2. Version 1 kept `(rootHash, blockNumber, timestamp, previousSize)` per
/// checkpoint and no index root; version 2 keeps the two roots per checkpoint and gives the
/// block, time and previous size of each commit in its `CheckpointCommitted` log (the latest
/// checkpoint's block and time are kept in storage too). See docs/gas.md.
interface IAuditLog {
    /// @notice A committed checkpoint, keyed by its tree size: the roots of the event log and
    /// of its verifiable index over the first `treeSize` events.
    struct Checkpoint {
        bytes32 rootHash;
        bytes32 indexRoot;
    }

    /// @notice The zero address cannot administer the log.
    error ZeroAddress();
    /// @notice A checkpoint of an empty tree carries no information and is refused.
    error EmptyCheckpoint();
    /// @notice A root of zero is refused: it is no SHA-256 root, and marks an absent checkpoint.
    error ZeroRoot();
    /// @notice `treeSize` is not larger than the latest checkpoint's `latestSize`.
    error CheckpointNotLarger(uint64 latestSize, uint64 treeSize);
    /// @notice The first checkpoint has nothing to be consistent with, so takes no proof.
    error ConsistencyProofNotExpected(uint256 proofLength);
    /// @notice The proof does not show that the tree of `newSize` extends the one of `oldSize`.
    error InvalidConsistencyProof(uint64 oldSize, uint64 newSize);
    /// @notice No checkpoint was committed for `treeSize`.
    error CheckpointNotFound(uint64 treeSize);

    /// @notice Emitted when the checkpoint of `treeSize` leaves is committed, with the root
    /// `rootHash` of the log and `indexRoot` of its index, after the checkpoint of
    /// `previousSize` (0 for the first). The log's block number and block time are the
    /// checkpoint's.
    event CheckpointCommitted(
        uint64 indexed treeSize,
        bytes32 rootHash,
        bytes32 indexRoot,
        uint64 previousSize
    );

    /// @notice Commits the checkpoint `(treeSize, rootHash)` of the log, with the root
    /// `indexRoot` of the log's verifiable index at `treeSize` (docs/index.md).
    /// @dev Only LOG_OPERATOR_ROLE. `proof` is the RFC 9162 §2.1.4 consistency proof from the
    /// latest checkpoint to this one (empty for the first checkpoint). Reverts with
    /// {EmptyCheckpoint}, {ZeroRoot}, {CheckpointNotLarger}, {ConsistencyProofNotExpected} or
    /// {InvalidConsistencyProof}.
    function commitCheckpoint(
        uint64 treeSize,
        bytes32 rootHash,
        bytes32 indexRoot,
        bytes32[] calldata proof
    ) external;

    /// @notice The latest checkpoint, with the number and time of the block that committed it;
    /// all zero before the first.
    function latestCheckpoint()
        external
        view
        returns (
            uint64 treeSize,
            bytes32 rootHash,
            bytes32 indexRoot,
            uint64 blockNumber,
            uint64 timestamp
        );

    /// @notice The roots committed for `treeSize`. Reverts with {CheckpointNotFound}.
    /// @dev Its block, time and previous size are in its `CheckpointCommitted` log.
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
