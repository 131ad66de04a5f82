// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice The simplest way to anchor health events on chain: one transaction per event,
/// storing its 32-byte hash. The baseline medtrail's checkpoints are compared with in
/// benchmarks/ (never deployed by medtrail itself).
contract HashStore {
    /// @notice When each hash was stored (block timestamp; 0: never).
    mapping(bytes32 hash => uint256 timestamp) public storedAt;

    event Stored(bytes32 indexed hash);

    error AlreadyStored(bytes32 hash);

    /// @notice Store ``hash`` with the current block's time.
    function store(bytes32 hash) external {
        if (storedAt[hash] != 0) revert AlreadyStored(hash);
        storedAt[hash] = block.timestamp;
        emit Stored(hash);
    }

    /// @notice Only log ``hash`` (no storage: provable from receipts, not readable by contracts).
    function announce(bytes32 hash) external {
        emit Stored(hash);
    }
}
