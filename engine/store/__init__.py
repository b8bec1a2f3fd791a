"""The durable store (docs/contract.md sections 7-9): open_store returns a SqliteStore or raises a StoreError.

engine.store.store describes the store and names its modules.
"""
from engine.store.errors import StoreError, StoreFailed, StoreRefused
from engine.store.store import SqliteStore, open_store

__all__ = ["SqliteStore", "StoreError", "StoreFailed", "StoreRefused", "open_store"]
