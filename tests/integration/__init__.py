"""Integration tests: the same tests against the embedded chain and anvil over JSON-RPC."""
