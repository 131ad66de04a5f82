"""The SQL store: events, tree nodes, checkpoints, grants (SQLite by default, PostgreSQL by URL)."""

from ledger.store.db import Store, StoreError

__all__ = ["Store", "StoreError"]
