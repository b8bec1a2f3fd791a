"""Seeding a store from a world folder, restoring the world from a store, and noting what changed in it.

A new store is seeded from the world: persons with their accumulators and
balances, chronic qualifications and filings are copied into the store with
their seed values (the seed_ columns `yidi check` starts from). An existing
store restores them from its own tables (restore_world); the catalogue,
policies, institutions and pre-payments are reloaded from the world folder at
every start, and what changed since the last start is logged (logger
`yidi.store`) and kept in the `world_load` table. A persons.csv, chronic.csv or
filings.csv the store has not recorded is applied at open as a running hub's
reload applies it (record_reload, called by the store). A world folder that lacks
persons or institutions the store holds is another world's: refused unless the
operator accepts it (world_differences, note_world_changes).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import sqlite3
import uuid
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract import money
from engine.core.signin import SignIn
from engine.store.schema import (
    KEYS_SCHEMA, PERSON_ACC, READ_CHUNK_ROWS, SCHEMA, SCHEMA_VERSION, SIGN_IN_COLS, STORE_FORMAT, schema_statements,
)
from engine.world.loader import DAY_OPEN, World
from engine.world.merge import WORLD_FILES, WorldMerge
from engine.store.errors import StoreRefused
from engine.store.files import refuse_sqlite

log = logging.getLogger("yidi.store")

# The files that seed the store once; the others are reloaded at every start.
SEED_FILES = ("persons.csv", "chronic.csv", "filings.csv")
# meta: the fingerprint of the last persons.csv found to name this store's persons, or accepted by the operator
# (the seed's until then), and the sorted fixmedins_codes of the world the store last started with.
META_PERSONS_ACCEPTED = "accepted_sha256:persons.csv"
META_INSTITUTION_CODES = "institution_codes"
# meta: the person rows and chronic slots the keyed file holds as of the last seed or reload (a reload cut short
# between its two files' transactions leaves more there: undone at open), and the slots a reload withdrew.
META_PERSON_ROWS = "person_rows"
META_CHRONIC_ROWS = "chronic_rows"
META_CHRONIC_WITHDRAWN = "chronic_withdrawn"
CODES_NAMED_MAX = 3  # codes a refusal names for each difference



@contextlib.contextmanager
def _transaction(w: sqlite3.Connection):
    """One write transaction of the seed or of a start; an SQLite error in it is refused by its cause."""
    w.execute("BEGIN IMMEDIATE")
    try:
        yield
        w.execute("COMMIT")
    except BaseException as e:
        # A failed COMMIT (a full disk) may already have rolled back by itself.
        if w.in_transaction:
            w.execute("ROLLBACK")
        if isinstance(e, sqlite3.Error):
            main = next((row[2] for row in w.execute("PRAGMA database_list") if row[1] == "main"), "the store")
            raise refuse_sqlite(main, e) from None
        raise

def _sha256(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return ""


def _now_text() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def seed_store(w: sqlite3.Connection, world: World, world_dir: str) -> None:
    """Create the schema and copy the world's dynamic part: the keyed file, then the main one, each in one
    transaction (on w, the store's connection with the keyed file attached)."""
    n = world.n_persons
    acc = [world.psn_balc, world.psn_acc_year, world.psn_hifp_ip, world.psn_hifp_op,
           world.psn_ded_op, world.psn_burden2, world.psn_second_paid]
    acc_lists = [a.tolist() for a in acc]
    strs = [world.psn_no.to_pylist(), world.psn_certno.to_pylist(), world.psn_name.to_pylist(),
            world.psn_insuplc.to_pylist(), world.psn_insutype.to_pylist(), world.psn_type.to_pylist()]
    year = acc_lists[1]
    store_id = uuid.uuid4().hex
    # The keyed file first, then the main one, each in one transaction: a main file with
    # tables means a whole seed (a keyed file left alone is removed at the next open).
    with _transaction(w):
        # Statement by statement: executescript would commit the open transaction.
        for stmt in schema_statements(KEYS_SCHEMA):
            w.execute(stmt.replace("CREATE TABLE ", "CREATE TABLE keys.", 1))
        w.executemany(
            "INSERT INTO person VALUES (" + ", ".join("?" * 21) + ")",
            ((i, *(s[i] for s in strs), *(a[i] for a in acc_lists), *(a[i] for a in acc_lists))
             for i in range(n)),
        )
        cd = world.chr_hifp_cd.tolist()
        w.executemany(
            "INSERT INTO chronic VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((k, p, d, cd[k], year[p], cd[k], year[p])
             for k, (p, d) in enumerate(zip(world.chr_psn.tolist(), world.chr_dise))),
        )
        w.execute("INSERT INTO fold_state VALUES (1, 0, ?)", (store_id,))
    with _transaction(w):
        for stmt in schema_statements(SCHEMA):
            w.execute(stmt)
        _insert_filings(w, filing_rows(world))
        meta = {"format": STORE_FORMAT, "schema_version": str(SCHEMA_VERSION), "created_at": _now_text(),
                "seeded_from": os.path.abspath(world_dir), "store_id": store_id, "logs_deleted_to": "0"}
        meta.update(world_meta(world, world_dir))
        meta.update({META_PERSON_ROWS: str(n), META_CHRONIC_ROWS: str(len(world.chr_dise)),
                     META_CHRONIC_WITHDRAWN: "[]"})
        w.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        w.execute("INSERT INTO world_load (loaded_at, world_dir, changes) VALUES (?, ?, ?)",
                  (_now_text(), os.path.abspath(world_dir), "seeded"))
    log.info("seeded %d persons, %d chronic qualifications, %d filings",
             n, len(world.chr_dise), len(world.fil_type))

def filing_rows(world: World, first: int = 0) -> list[tuple]:
    """The `filing` rows of a world's filings from the `first` on (its id is the filing's place in the world)."""
    begn, end = world.fil_begn.tolist(), world.fil_end.tolist()
    return [(i, p, world.fil_type[i], world.fil_dest[i], money.format_day(begn[i]),
             None if end[i] == DAY_OPEN else money.format_day(end[i]), world.fil_status[i])
            for i, p in enumerate(world.fil_psn.tolist()[first:], first)]


def _insert_filings(w: sqlite3.Connection, rows: list[tuple]) -> None:
    w.executemany("INSERT INTO filing VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def _person_rows(world: World, rows) -> list[tuple]:
    """person rows (KEYS_SCHEMA) of the world's persons `rows`: the world's values, which are their seed too."""
    strs = [world.psn_no, world.psn_certno, world.psn_name, world.psn_insuplc, world.psn_insutype, world.psn_type]
    acc = [world.psn_balc, world.psn_acc_year, world.psn_hifp_ip, world.psn_hifp_op,
           world.psn_ded_op, world.psn_burden2, world.psn_second_paid]
    out = []
    for i in rows:
        values = [int(a[i]) for a in acc]
        out.append((int(i), *(s[int(i)].as_py() for s in strs), *values, *values))
    return out


def record_reload(w: sqlite3.Connection, merge: WorldMerge, world_dir: str, meta: dict,
                  filings: list[tuple], filings_kept: int) -> None:
    """Make a reloaded world the store's (engine.world.merge): the new persons and chronic slots and the changed
    persons' static fields in the keyed file, then the filings, the slots withdrawn and the world's fingerprints in
    the main file, each file in one transaction, the keyed file first (a reload cut short between the two is undone
    at open: undo_cut_reload). A restart with this world folder then finds it unchanged. `meta` (world_meta of the
    folder) and `filings` are made before: commits wait while the main file is written. `filings` are filing_rows
    of the world's filings from `filings_kept` on: the store's first `filings_kept` stay (-1: all are replaced),
    so the daily case, filings appended, writes only the new ones."""
    world = merge.world
    n, k_old, k_new = world.n_persons, merge.slots_before, len(world.chr_dise)
    with _transaction(w):
        w.executemany("INSERT INTO person VALUES (" + ", ".join("?" * 21) + ")",
                      _person_rows(world, range(merge.persons_before, n)))
        statics = [world.psn_certno, world.psn_name, world.psn_insuplc, world.psn_insutype, world.psn_type]
        w.executemany("UPDATE person SET certno = ?, psn_name = ?, insuplc_admdvs = ?, insutype = ?, psn_type = ?"
                      " WHERE psn = ?", ((*(s[int(i)].as_py() for s in statics), int(i))
                                         for i in merge.persons_changed))
        years = world.psn_acc_year
        w.executemany("INSERT INTO chronic VALUES (?, ?, ?, ?, ?, ?, ?)",
                      ((k, int(world.chr_psn[k]), world.chr_dise[k], int(world.chr_hifp_cd[k]),
                        int(years[world.chr_psn[k]]), int(world.chr_hifp_cd[k]), int(years[world.chr_psn[k]]))
                       for k in range(k_old, k_new)))
    new = dict(meta)
    new.update({META_PERSONS_ACCEPTED: new["sha256:persons.csv"], META_PERSON_ROWS: str(n),
                META_CHRONIC_ROWS: str(k_new), META_CHRONIC_WITHDRAWN: json.dumps(sorted(merge.chronic_withdrawn))})
    changes = ", ".join(f"{k} {v}" for k, v in merge.counts.items())
    with _transaction(w):
        if filings_kept < 0:
            w.execute("DELETE FROM filing")
        _insert_filings(w, filings)
        w.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", new.items())
        w.execute("INSERT INTO world_load (loaded_at, world_dir, changes) VALUES (?, ?, ?)",
                  (_now_text(), os.path.abspath(world_dir), "reload: " + changes))
    log.info("reloaded the world %s into the store: %s", world_dir, changes)


def undo_cut_reload(w: sqlite3.Connection, data_dir: str) -> None:
    """Remove the person rows and chronic slots a reload cut short left in the keyed file (record_reload wrote its
    keyed file's transaction, not its main file's): the store is then as before that reload."""
    meta = dict(w.execute("SELECT key, value FROM meta WHERE key IN (?, ?)", (META_PERSON_ROWS, META_CHRONIC_ROWS)))
    if len(meta) < 2:
        return  # a store made before these were kept
    n, k = int(meta[META_PERSON_ROWS]), int(meta[META_CHRONIC_ROWS])
    extra_p = w.execute("SELECT COUNT(*) FROM person WHERE psn >= ?", (n,)).fetchall()[0][0]
    extra_k = w.execute("SELECT COUNT(*) FROM chronic WHERE slot >= ?", (k,)).fetchall()[0][0]
    if extra_p or extra_k:
        log.warning("%s: a reload cut short left %d persons and %d chronic qualifications in the store; removed "
                    "(the world of the reload before it is in force: reload again)", data_dir, extra_p, extra_k)
        with _transaction(w):
            w.execute("DELETE FROM person WHERE psn >= ?", (n,))
            w.execute("DELETE FROM chronic WHERE slot >= ?", (k,))


def chronic_withdrawn(w: sqlite3.Connection) -> frozenset:
    """The chronic slots a reload withdrew (record_reload)."""
    row = w.execute("SELECT value FROM meta WHERE key = ?", (META_CHRONIC_WITHDRAWN,)).fetchall()
    return frozenset(json.loads(row[0][0])) if row else frozenset()


def world_meta(world: World, world_dir: str) -> dict:
    meta = {f"sha256:{f}": _sha256(os.path.join(world_dir, f)) for f in WORLD_FILES}
    with open(os.path.join(world_dir, "policies.json"), "rb") as f:
        meta["policies_json"] = f.read().decode("utf-8")
    meta["catalogue_rows"] = str(len(world.cat_code))
    meta["institutions_rows"] = str(len(world.inst_code))
    meta[META_INSTITUTION_CODES] = json.dumps(sorted(set(world.inst_code)))
    return meta


def _some(codes: set) -> str:
    shown = sorted(codes)[:CODES_NAMED_MAX]
    return ", ".join(shown) + (", ..." if len(codes) > CODES_NAMED_MAX else "")


def world_differences(w: sqlite3.Connection, world: World, old: dict, new: dict) -> tuple[list[str], list[str], bool]:
    """How `world` differs from the store's in persons and institutions.

    Returns (differences, notes, drops): drops when `world` lacks persons or institutions
    the store holds, which makes it another world. Persons: the world's psn_no set
    against the store's person table, read only when persons.csv is neither the one
    last recorded nor one accepted before. Institutions: the set of fixmedins_code
    against that of the last start; a store that never kept it keeps it from now on.
    Persons and institutions added, names, levels, the catalogue, policies and
    pre-payments are a world's daily updates.
    """
    diffs: list[str] = []
    notes: list[str] = []
    drops = False
    sha = new["sha256:persons.csv"]
    if sha not in (old.get("sha256:persons.csv"), old.get(META_PERSONS_ACCEPTED)):
        held = {r[0] for r in w.execute("SELECT psn_no FROM person")}
        named = set(world.psn_no.to_pylist())
        if held != named:
            extra, missing = named - held, held - named
            drops = drops or bool(missing)
            diffs.append(f"persons.csv names {len(extra):,} persons this store does not hold"
                         + (f" ({_some(extra)})" if extra else "")
                         + f" and lacks {len(missing):,} of its {len(held):,}"
                         + (f" ({_some(missing)})" if missing else ""))
    if META_INSTITUTION_CODES in old:
        before = set(json.loads(old[META_INSTITUTION_CODES]))
        now = set(json.loads(new[META_INSTITUTION_CODES]))
        if before != now:
            added, dropped = now - before, before - now
            drops = drops or bool(dropped)
            diffs.append(f"institutions.csv adds {len(added):,} institutions" + (f" ({_some(added)})" if added else "")
                         + f" and drops {len(dropped):,}" + (f" ({_some(dropped)})" if dropped else ""))
    else:
        notes.append("institution codes kept from now on: a world that drops institutions will be refused")
    return diffs, notes, drops


def note_world_changes(w: sqlite3.Connection, data_dir: str, world: World, world_dir: str, *,
                       accept: bool = False) -> frozenset | None:
    """Log what changed in the world since the last start, and keep it in world_load; the reloaded files
    are in force. When persons.csv, chronic.csv or filings.csv changed and are to be applied as a running
    hub's reload applies them (the store's record_world: the store's world plus additions), returns the
    institution codes of the last start (what the reload counts the institutions added against); else None.

    A world that lacks persons or institutions the store holds (world_differences) is
    another world: refused with StoreRefused, nothing written, unless `accept` (the
    operator's --accept-world-change), which keeps it as the store's world from now on,
    with the store's persons, chronic qualifications and filings.
    """
    old = dict(w.execute("SELECT key, value FROM meta").fetchall())
    new = world_meta(world, world_dir)
    diffs, notes, drops = world_differences(w, world, old, new)
    if drops and not accept:
        raise StoreRefused(
            f"{data_dir}: the world {world_dir} is not this store's (seeded from {old.get('seeded_from', '?')}): "
            f"{'; '.join(diffs)}; start with this store's world folder, or pass --accept-world-change to go on "
            "with this one (persons, chronic qualifications and filings stay the store's)")
    # Another world accepted, now or at an earlier start: its persons.csv is not the one the store recorded.
    accepted = drops or (new["sha256:persons.csv"] == old.get(META_PERSONS_ACCEPTED)
                         and new["sha256:persons.csv"] != old.get("sha256:persons.csv"))
    reload_due = not accepted and any(old.get(f"sha256:{f}") != new[f"sha256:{f}"] for f in SEED_FILES)
    if drops:
        notes.append("world change accepted (--accept-world-change): " + "; ".join(diffs))
    elif diffs:
        notes.append("the world adds to the store's: " + "; ".join(diffs) + "; applied as a reload applies it")
    # This persons.csv names the store's persons, or the operator accepted it: not compared again.
    new[META_PERSONS_ACCEPTED] = new["sha256:persons.csv"]
    for f in WORLD_FILES:
        if old.get(f"sha256:{f}") == new[f"sha256:{f}"]:
            continue
        if f == "catalogue.csv":
            notes.append(f"catalogue.csv changed: {old.get('catalogue_rows')} -> {new['catalogue_rows']} "
                         "rows; the new catalogue is in force")
        elif f == "policies.json":
            notes.append("policies.json changed: " + policy_diff(old.get("policies_json", "[]"),
                                                                  new["policies_json"])
                         + "; the new policies are in force")
        elif f == "institutions.csv":
            notes.append(f"institutions.csv changed: {old.get('institutions_rows')} -> "
                         f"{new['institutions_rows']} rows; in force")
        elif f == "prepay.csv":
            notes.append("prepay.csv changed; in force")
        elif reload_due:
            notes.append(f"{f} changed; applied as a reload applies it")
        else:
            notes.append(f"{f} differs from the one this store was seeded from or last reloaded; not applied: "
                         "persons, chronic qualifications and filings come from the store of an accepted world")
    for note in notes:
        (log.warning if "not applied" in note or "accepted" in note else log.info)("%s: %s", data_dir, note)
    if not notes:
        log.info("%s: the world %s is unchanged since the last start", data_dir, world_dir)
    # The seed files keep the fingerprints the store recorded (the reload records the new ones): for an accepted
    # world, a warning at each start until they match again.
    for f in SEED_FILES:
        new[f"sha256:{f}"] = old.get(f"sha256:{f}", "")
    with _transaction(w):
        w.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", new.items())
        w.execute("INSERT INTO world_load (loaded_at, world_dir, changes) VALUES (?, ?, ?)",
                  (_now_text(), os.path.abspath(world_dir), "; ".join(notes) or "unchanged"))
    if not reload_due:
        return None
    return frozenset(json.loads(old.get(META_INSTITUTION_CODES, new[META_INSTITUTION_CODES])))


def restore_world(w: sqlite3.Connection, world: World) -> tuple[World, list[int]]:
    """The world's catalogue and policies with the store's persons, chronic qualifications and filings
    (as folded), and the year each chronic slot's hifp_cd counts in."""
    n = w.execute("SELECT COUNT(*) FROM person").fetchall()[0][0]
    strs: list[list] = [[] for _ in range(6)]
    nums = [np.empty(n, np.int64) for _ in PERSON_ACC]
    cur = w.execute(
        "SELECT psn, psn_no, certno, psn_name, insuplc_admdvs, insutype, psn_type, balc_fen, acc_year,"
        " hifp_ip_fen, hifp_op_fen, ded_op_fen, burden2_fen, second_paid_fen FROM person ORDER BY psn"
    )
    i = 0
    while True:
        rows = cur.fetchmany(READ_CHUNK_ROWS)
        if not rows:
            break
        cols = list(zip(*rows))
        m = len(rows)
        assert cols[0][0] == i and cols[0][-1] == i + m - 1, "person rows must be 0..n-1"
        for k in range(6):
            strs[k].extend(cols[1 + k])
        for k in range(len(PERSON_ACC)):
            nums[k][i : i + m] = cols[7 + k]
        i += m
    assert i == n
    chr_rows = w.execute("SELECT slot, psn, dise_codg, hifp_cd_fen, cd_year FROM chronic ORDER BY slot").fetchall()
    assert all(r[0] == k for k, r in enumerate(chr_rows)), "chronic slots must be 0..n-1"
    fil_rows = w.execute(
        "SELECT psn, filing_type, dest_admdvs, begndate, enddate, status FROM filing ORDER BY id"
    ).fetchall()
    psn_no = pa.array(strs[0], pa.string())
    assert len(pc.unique(psn_no)) == n, "psn_no must be unique in the person table"
    balc, acc_year, hifp_ip, hifp_op, ded_op, burden2, second_paid = nums
    restored = replace(
        world,
        psn_no=psn_no, psn_certno=pa.array(strs[1], pa.string()),
        psn_name=pa.array(strs[2], pa.string()), psn_insuplc=pa.array(strs[3], pa.string()),
        psn_insutype=pa.array(strs[4], pa.string()), psn_type=pa.array(strs[5], pa.string()),
        psn_balc=balc, psn_acc_year=acc_year.astype(np.int32), psn_hifp_ip=hifp_ip, psn_hifp_op=hifp_op,
        psn_ded_op=ded_op, psn_burden2=burden2, psn_second_paid=second_paid,
        chr_psn=np.array([r[1] for r in chr_rows], np.int32), chr_dise=[r[2] for r in chr_rows],
        chr_hifp_cd=np.array([r[3] for r in chr_rows], np.int64),
        fil_psn=np.array([r[0] for r in fil_rows], np.int32), fil_type=[r[1] for r in fil_rows],
        fil_dest=[r[2] for r in fil_rows],
        fil_begn=np.array([money.parse_day(r[3]) for r in fil_rows], np.int32),
        fil_end=np.array([DAY_OPEN if r[4] is None else money.parse_day(r[4]) for r in fil_rows], np.int32),
        fil_status=[r[5] for r in fil_rows],
    )
    return restored, [r[4] for r in chr_rows]


def policy_diff(old_text: str, new_text: str) -> str:
    """What changed between two policies.json texts, policy by (insuplc_admdvs, insutype)."""
    def by_key(text: str) -> dict:
        try:
            items = json.loads(text)
        except ValueError:
            return {}
        return {f"{p.get('insuplc_admdvs')}/{p.get('insutype')}": json.dumps(p, sort_keys=True)
                for p in items if isinstance(p, dict)}

    old, new = by_key(old_text), by_key(new_text)
    changed = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())

    def part(what: str, keys: list) -> str:
        shown = ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
        return f"{len(keys)} {what}" + (f" ({shown})" if keys else "")

    return ", ".join((part("changed", changed), part("added", added), part("removed", removed)))


def restore_sign_ins(w: sqlite3.Connection, clock: str) -> list[SignIn]:
    """The sign-ins not signed out (section 10), for the engine; on the wall clock only those still in force."""
    sql = f"SELECT {', '.join(SIGN_IN_COLS)} FROM sign_in WHERE signed_out = ''"
    args: tuple = ()
    if clock == "wall":
        sql += " AND ends > ?"
        args = (_now_text(),)
    return [SignIn(*r) for r in w.execute(sql + " ORDER BY sign_time", args).fetchall()]
