"""The store on PostgreSQL, for several hub nodes on one database (docs/contract.md section 13).

engine.store.pg.store describes it; open_store (engine.store) opens it for a
`postgresql://` URL. Importing this package does not import psycopg.
"""
URL_SCHEMES = ("postgresql://", "postgres://")


def is_store_url(text: object) -> bool:
    """Whether `--store` names a PostgreSQL database."""
    return isinstance(text, str) and text.startswith(URL_SCHEMES)
