"""medtrail service core: events, hashing, the Merkle log, store, chain and verification."""
