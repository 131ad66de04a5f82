// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Ways to commit the index root with each checkpoint (benchmark only, issue 16)
/// @notice Four versions of AuditLog.commitCheckpoint, identical but for what they store, so
/// that their gas can be compared side by side (benchmarks/gas.py, docs/gas.md):
/// - {V1RootAndMeta}: AuditLog version 1, no index root: the log root and a slot of block,
///   time and previous size per checkpoint;
/// - {TwoRootsMetaInLog}: (a), AuditLog version 2: the log root and the index root per
///   checkpoint; block, time and previous size in the event (the latest's block and time in
///   the slot already written per commit);
/// - {CommitmentAndMeta}: (b) one slot `sha256(logRoot || indexRoot)` and the metadata slot;
///   the previous checkpoint's two roots come in calldata, checked against its commitment;
/// - {ThreeSlots}: (c) both roots and the metadata slot.
/// The operator check is one storage read, as AccessControl's `onlyRole` is; the RFC 9162
/// verifier is AuditLog's.

abstract contract Rfc9162 {
    mapping(address => bool) internal _operators;

    error NotOperator();
    error EmptyCheckpoint();
    error CheckpointNotLarger(uint64 latestSize, uint64 treeSize);
    error ConsistencyProofNotExpected(uint256 proofLength);
    error InvalidConsistencyProof(uint64 oldSize, uint64 newSize);
    error WrongPreviousRoots();

    constructor() {
        _operators[msg.sender] = true;
    }

    modifier onlyOperator() {
        if (!_operators[msg.sender]) revert NotOperator();
        _;
    }

    function _verifyConsistency(
        uint64 oldSize,
        uint64 newSize,
        bytes32 oldRoot,
        bytes32 newRoot,
        bytes32[] calldata proof
    ) internal view returns (bool) {
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

    function _hashChildren(bytes32 left, bytes32 right) internal view returns (bytes32 result) {
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

/// Version 1: the log root, and block, time and previous size in a second slot.
contract V1RootAndMeta is Rfc9162 {
    struct Checkpoint {
        bytes32 rootHash;
        uint64 blockNumber;
        uint64 timestamp;
        uint64 previousSize;
    }

    event CheckpointCommitted(uint64 indexed treeSize, bytes32 rootHash, uint64 previousSize);

    mapping(uint64 => Checkpoint) private _checkpoints;
    uint64 private _latestSize;
    uint64 private _count;

    function commitCheckpoint(uint64 treeSize, bytes32 rootHash, bytes32[] calldata proof)
        external
        onlyOperator
    {
        if (treeSize == 0) revert EmptyCheckpoint();
        uint64 latestSize = _latestSize;
        if (latestSize == 0) {
            if (proof.length != 0) revert ConsistencyProofNotExpected(proof.length);
        } else {
            if (treeSize <= latestSize) revert CheckpointNotLarger(latestSize, treeSize);
            bytes32 latestRoot = _checkpoints[latestSize].rootHash;
            if (!_verifyConsistency(latestSize, treeSize, latestRoot, rootHash, proof)) {
                revert InvalidConsistencyProof(latestSize, treeSize);
            }
        }
        _checkpoints[treeSize] = Checkpoint(
            rootHash, uint64(block.number), uint64(block.timestamp), latestSize
        );
        _latestSize = treeSize;
        unchecked {
            ++_count;
        }
        emit CheckpointCommitted(treeSize, rootHash, latestSize);
    }
}

/// (a) Both roots per checkpoint; block, time and previous size in the log.
contract TwoRootsMetaInLog is Rfc9162 {
    struct Checkpoint {
        bytes32 rootHash;
        bytes32 indexRoot;
    }

    struct Latest {
        uint64 treeSize;
        uint64 count;
        uint64 blockNumber;
        uint64 timestamp;
    }

    event CheckpointCommitted(
        uint64 indexed treeSize, bytes32 rootHash, bytes32 indexRoot, uint64 previousSize
    );

    mapping(uint64 => Checkpoint) private _checkpoints;
    Latest private _latest;

    function commitCheckpoint(
        uint64 treeSize,
        bytes32 rootHash,
        bytes32 indexRoot,
        bytes32[] calldata proof
    ) external onlyOperator {
        if (treeSize == 0) revert EmptyCheckpoint();
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
        _checkpoints[treeSize] = Checkpoint(rootHash, indexRoot);
        unchecked {
            _latest = Latest(
                treeSize, latest.count + 1, uint64(block.number), uint64(block.timestamp)
            );
        }
        emit CheckpointCommitted(treeSize, rootHash, indexRoot, latestSize);
    }
}

/// (b) One commitment to both roots, and the metadata slot; the previous roots in calldata.
contract CommitmentAndMeta is Rfc9162 {
    struct Checkpoint {
        bytes32 commitment;
        uint64 blockNumber;
        uint64 timestamp;
        uint64 previousSize;
    }

    event CheckpointCommitted(
        uint64 indexed treeSize, bytes32 rootHash, bytes32 indexRoot, uint64 previousSize
    );

    mapping(uint64 => Checkpoint) private _checkpoints;
    uint64 private _latestSize;
    uint64 private _count;

    function commitCheckpoint(
        uint64 treeSize,
        bytes32 rootHash,
        bytes32 indexRoot,
        bytes32 previousRootHash,
        bytes32 previousIndexRoot,
        bytes32[] calldata proof
    ) external onlyOperator {
        if (treeSize == 0) revert EmptyCheckpoint();
        uint64 latestSize = _latestSize;
        if (latestSize == 0) {
            if (proof.length != 0) revert ConsistencyProofNotExpected(proof.length);
        } else {
            if (treeSize <= latestSize) revert CheckpointNotLarger(latestSize, treeSize);
            bytes32 committed = _checkpoints[latestSize].commitment;
            if (sha256(abi.encodePacked(previousRootHash, previousIndexRoot)) != committed) {
                revert WrongPreviousRoots();
            }
            if (!_verifyConsistency(latestSize, treeSize, previousRootHash, rootHash, proof)) {
                revert InvalidConsistencyProof(latestSize, treeSize);
            }
        }
        _checkpoints[treeSize] = Checkpoint(
            sha256(abi.encodePacked(rootHash, indexRoot)),
            uint64(block.number),
            uint64(block.timestamp),
            latestSize
        );
        _latestSize = treeSize;
        unchecked {
            ++_count;
        }
        emit CheckpointCommitted(treeSize, rootHash, indexRoot, latestSize);
    }
}

/// (c) Both roots and the metadata slot: three new slots per checkpoint.
contract ThreeSlots is Rfc9162 {
    struct Checkpoint {
        bytes32 rootHash;
        bytes32 indexRoot;
        uint64 blockNumber;
        uint64 timestamp;
        uint64 previousSize;
    }

    event CheckpointCommitted(
        uint64 indexed treeSize, bytes32 rootHash, bytes32 indexRoot, uint64 previousSize
    );

    mapping(uint64 => Checkpoint) private _checkpoints;
    uint64 private _latestSize;
    uint64 private _count;

    function commitCheckpoint(
        uint64 treeSize,
        bytes32 rootHash,
        bytes32 indexRoot,
        bytes32[] calldata proof
    ) external onlyOperator {
        if (treeSize == 0) revert EmptyCheckpoint();
        uint64 latestSize = _latestSize;
        if (latestSize == 0) {
            if (proof.length != 0) revert ConsistencyProofNotExpected(proof.length);
        } else {
            if (treeSize <= latestSize) revert CheckpointNotLarger(latestSize, treeSize);
            bytes32 latestRoot = _checkpoints[latestSize].rootHash;
            if (!_verifyConsistency(latestSize, treeSize, latestRoot, rootHash, proof)) {
                revert InvalidConsistencyProof(latestSize, treeSize);
            }
        }
        _checkpoints[treeSize] = Checkpoint(
            rootHash, indexRoot, uint64(block.number), uint64(block.timestamp), latestSize
        );
        _latestSize = treeSize;
        unchecked {
            ++_count;
        }
        emit CheckpointCommitted(treeSize, rootHash, indexRoot, latestSize);
    }
}
