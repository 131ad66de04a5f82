"""medtrail HTTP API and command line."""
