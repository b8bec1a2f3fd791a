"""The durable store (docs/contract.md sections 7-9, 13): open_store returns a SqliteStore for a data folder, a
PgStore for a `postgresql://` URL, or raises a StoreError.

engine.store.store describes the embedded store and names its modules; engine.store.pg.store the PostgreSQL one.
"""
from engine.store.errors import StoreError, StoreFailed, StoreRefused, StoreUnavailable
from engine.store.pg import is_store_url
from engine.store.store import SqliteStore
from engine.store.store import open_store as _open_sqlite


def open_store(where: str, world_dir: str, *, clock: str = "wall", accept_world_change: bool = False, **kw):
    """The store at `where`: a data folder (engine.store.store.open_store, whose keywords `kw` takes) or a
    PostgreSQL URL (engine.store.pg.store.PgStore: several nodes may open the same database)."""
    if is_store_url(where):
        from engine.store.pg.store import PgStore  # psycopg only when a URL is given

        return PgStore(where, world_dir, clock=clock, accept_world_change=accept_world_change)
    return _open_sqlite(where, world_dir, clock=clock, accept_world_change=accept_world_change, **kw)


__all__ = ["SqliteStore", "StoreError", "StoreFailed", "StoreRefused", "StoreUnavailable", "is_store_url",
           "open_store"]
