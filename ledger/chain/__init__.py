"""Everything that talks to the EVM chain: artifacts, deployment, transactions, adapters."""
