"""The store's errors: every way it refuses to open or to go on names its cause."""
from __future__ import annotations


class StoreError(Exception):
    """Base of the store's errors."""


class StoreRefused(StoreError):
    """The data folder cannot be opened as a store: damaged, truncated, foreign, or in use."""


class StoreFailed(StoreError):
    """A commit did not reach the disk: the engine in memory is ahead of it. Stop the process."""



class StoreUnavailable(StoreError):
    """A store on a database server cannot take this batch now (the server gone, the connection lost, a commit
    whose outcome is unknown): nothing of the batch was acknowledged; answer E_BUSY, retry later."""
