"""Making and opening the store's database: schema, version, seed from the world, the world's checks.

A new database (no `meta` table) gets the schema (engine.store.pg.schema) and the
world's dynamic part (persons with their accumulators, chronic qualifications,
filings) in one transaction under the store's lock, so that two nodes started at
once on an empty database seed it once. An existing one must be a yidi store of
this or an older schema version (brought up to this one in one transaction), and
of this world: engine.store.seed's checks and notes run on it unchanged.
"""
from __future__ import annotations

import logging
import os
import uuid

import psycopg

from engine.contract import money
from engine.store.errors import StoreRefused
from engine.store.pg.schema import PG_FORMAT, PG_SCHEMA_VERSION, create_statements, upgrade_statements
from engine.store.pg.sql import STORE_LOCK_KEY, PgConn, redact, refuse_pg
from engine.store.seed import _now_text, world_meta
from engine.world.loader import DAY_OPEN, World

log = logging.getLogger("yidi.store")

_PERSON_COLS = ("psn", "psn_no", "certno", "psn_name", "insuplc_admdvs", "insutype", "psn_type", "balc_fen",
                "acc_year", "hifp_ip_fen", "hifp_op_fen", "ded_op_fen", "burden2_fen", "second_paid_fen",
                "seed_balc_fen", "seed_acc_year", "seed_hifp_ip_fen", "seed_hifp_op_fen", "seed_ded_op_fen",
                "seed_burden2_fen", "seed_second_paid_fen")


def prepare_database(c: PgConn, world: World, world_dir: str) -> bool:
    """Create and seed a new database, or check and upgrade an existing one; True when seeded now.

    One transaction under the store's lock (engine.store.pg.sql.STORE_LOCK_KEY).
    """
    raw = c.raw
    url = c.url
    doing = "making the schema"
    try:
        raw.execute("BEGIN")
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (STORE_LOCK_KEY,))
        if raw.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
            others = raw.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()[0]
            if others:
                raise StoreRefused(f"--store {redact(url)}: the database holds {others} tables but no yidi store;"
                                   " give yidi a database of its own")
            log.info("seeding a new store in %s from the world %s", redact(url), world_dir)
            for stmt in create_statements():
                raw.execute(stmt)
            doing = "seeding the store"
            _seed(raw, world, world_dir)
            seeded = True
        else:
            doing = "reading the store's version"
            _check_version(raw, url)
            seeded = False
        raw.execute("COMMIT")
        return seeded
    except StoreRefused:
        _rollback(raw)
        raise
    except psycopg.Error as e:
        _rollback(raw)
        raise refuse_pg(url, e, doing) from None


def _rollback(raw) -> None:
    try:
        raw.execute("ROLLBACK")
    except psycopg.Error:
        pass


def _check_version(raw, url: str) -> None:
    meta = dict(raw.execute("SELECT key, value FROM meta WHERE key IN ('format', 'schema_version')").fetchall())
    if meta.get("format") != PG_FORMAT:
        raise StoreRefused(f"--store {redact(url)}: a `meta` table, but not a yidi store's (format "
                           f"{meta.get('format')!r}); refusing to use or reset it")
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError:
        raise StoreRefused(f"--store {redact(url)}: schema version {meta.get('schema_version')!r} is not a number")
    if version > PG_SCHEMA_VERSION:
        raise StoreRefused(f"--store {redact(url)}: the store is of schema version {version}, newer than this yidi's "
                           f"{PG_SCHEMA_VERSION}: upgrade yidi on this node (the database is left as it is)")
    if version < PG_SCHEMA_VERSION:
        for stmt in upgrade_statements(version):
            raw.execute(stmt)
        raw.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(PG_SCHEMA_VERSION),))
        log.info("store %s brought from schema version %d to %d", redact(url), version, PG_SCHEMA_VERSION)


def _seed(raw, world: World, world_dir: str) -> None:
    """The world's persons, chronic qualifications and filings, meta and the head row (module docstring)."""
    n = world.n_persons
    acc = [a.tolist() for a in (world.psn_balc, world.psn_acc_year, world.psn_hifp_ip, world.psn_hifp_op,
                                world.psn_ded_op, world.psn_burden2, world.psn_second_paid)]
    strs = [world.psn_no.to_pylist(), world.psn_certno.to_pylist(), world.psn_name.to_pylist(),
            world.psn_insuplc.to_pylist(), world.psn_insutype.to_pylist(), world.psn_type.to_pylist()]
    with raw.cursor() as cur:
        with cur.copy(f"COPY person ({', '.join(_PERSON_COLS)}) FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((i, *(s[i] for s in strs), *(a[i] for a in acc), *(a[i] for a in acc)))
        year = acc[1]
        cd = world.chr_hifp_cd.tolist()
        with cur.copy("COPY chronic (slot, psn, dise_codg, hifp_cd_fen, cd_year, seed_hifp_cd_fen, seed_cd_year)"
                      " FROM STDIN") as cp:
            for k, (p, d) in enumerate(zip(world.chr_psn.tolist(), world.chr_dise)):
                cp.write_row((k, p, d, cd[k], year[p], cd[k], year[p]))
        begn, end = world.fil_begn.tolist(), world.fil_end.tolist()
        with cur.copy("COPY filing (id, psn, filing_type, dest_admdvs, begndate, enddate, status) FROM STDIN") as cp:
            for i, p in enumerate(world.fil_psn.tolist()):
                cp.write_row((i, p, world.fil_type[i], world.fil_dest[i], money.format_day(begn[i]),
                              None if end[i] == DAY_OPEN else money.format_day(end[i]), world.fil_status[i]))
    meta = {"format": PG_FORMAT, "schema_version": str(PG_SCHEMA_VERSION), "created_at": _now_text(),
            "seeded_from": os.path.abspath(world_dir), "store_id": uuid.uuid4().hex, "logs_deleted_to": "0"}
    meta.update(world_meta(world, world_dir))
    with raw.cursor() as cur:
        cur.executemany("INSERT INTO meta VALUES (%s, %s)", list(meta.items()))
    raw.execute("INSERT INTO world_load (loaded_at, world_dir, changes) VALUES (%s, %s, 'seeded')",
                (_now_text(), os.path.abspath(world_dir)))
    raw.execute("INSERT INTO head VALUES (1, 0, 0, 0)")
    log.info("seeded %d persons, %d chronic qualifications, %d filings", n, len(world.chr_dise), len(world.fil_type))
