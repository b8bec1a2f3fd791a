"""A node catching up on what other nodes committed (docs/contract.md section 13).

Every batch of every node runs under the store's lock and numbers itself with the
next global batch number (`head.gseq`); each row it writes or updates carries it.
Before a node computes a batch it reads, under that lock, every row with a gseq
above the last it has seen (in the round trip that takes the lock and reads the
head: send_catch_up), and puts in its engine exactly what its own open would
have restored from them (apply_catch_up):
- persons' accumulators and balances, and chronic slots (the rows updated);
- the msgids and visits of the journal rows, into the lookup filters (the
  lookups themselves read the database, so a filter that may contain a key
  sends the engine to it);
- the step rows' effects (the visits of the step-wise flow, filings made
  online), applied in order with the engine's own apply_effect, and their
  msgids;
- sign-ins made or ended.
The engine then holds what it would hold after processing every batch committed
so far, whichever node made them. Nothing else of the engine's state depends on
other requests: settled records, stored replies and reconciliation rows are read
from the database when needed.
"""
from __future__ import annotations

import msgspec
import numpy as np

from engine.core.records import CHANGE_SETTLE
from engine.core.signin import SignIn
from engine.store.schema import PERSON_ACC, SIGN_IN_COLS

_EFFECTS = msgspec.msgpack.Decoder(list)
_PSN_COLS = ", ".join(["psn", *(k if k == "acc_year" else k + "_fen" for k in PERSON_ACC)])


# What a node reads to catch up, each statement with the last batch number it has seen. The upper bound never
# binds: with it, a table PostgreSQL has not analyzed yet (autovacuum comes a minute or more after the rows) is
# estimated as a narrow range (the index) and not as a third of the table (a scan of the whole journal).
_NEWER = "gseq > %s::bigint AND gseq <= 9223372036854775807"
CATCH_UP_SQL = (
    f"SELECT {_PSN_COLS} FROM person WHERE {_NEWER}",
    f"SELECT slot, hifp_cd_fen, cd_year FROM chronic WHERE {_NEWER}",
    f"SELECT msgid, kind, fixmedins_code, mdtrt_id, chrg_bchno FROM journal WHERE {_NEWER}",
    f"SELECT msgid, effects FROM step WHERE {_NEWER} ORDER BY seq",
    f"SELECT {', '.join(SIGN_IN_COLS)} FROM sign_in WHERE {_NEWER}",
)


def send_catch_up(raw, seen: int) -> list:
    """Send the catch-up's statements (in the caller's pipeline, after the lock's: module docstring); their
    cursors, for apply_catch_up once the pipeline is synced.

    Never prepared: a prepared statement soon runs on PostgreSQL's generic plan, which cannot know that
    `gseq > $1` selects the few newest rows, and scans the whole journal (10 ms and more a batch, under the
    store's lock, growing with the journal). Sent unprepared, each is planned for its value: the gseq index
    (tests/test_pg_store.py checks the plans)."""
    cursors = []
    for sql in CATCH_UP_SQL:
        cur = raw.cursor()
        cur.execute(sql, (seen,), prepare=False)
        cursors.append(cur)
    return cursors


def apply_catch_up(cursors: list, engine, reader) -> dict[str, int]:
    """Apply what send_catch_up read (module docstring); returns how many rows of each kind were applied."""
    rows, slots, journal, steps, signs = (c.fetchall() for c in cursors)
    for c in cursors:
        c.close()
    st = engine.state
    if rows:
        cols = list(zip(*rows))
        idx = np.array(cols[0], np.int64)
        for arr, values in zip((st.balc_fen, st.acc_year, st.hifp_ip_fen, st.hifp_op_fen, st.ded_op_fen,
                                st.burden2_fen, st.second_paid_fen), cols[1:]):
            arr[idx] = values
    if slots:
        cols = list(zip(*slots))
        idx = np.array(cols[0], np.int64)
        st.cd_val_fen[idx] = cols[1]
        st.cd_year[idx] = cols[2]
    if journal:
        reader.msgids.add_all([r[0] for r in journal])
        reader.visits.add_all_pairs([(r[2], r[3]) for r in journal if r[1] == CHANGE_SETTLE and r[4] is None])
    if steps:
        apply = engine.apply_effect  # visits (section 11) and filings made online, as an open applies them
        for _, blob in steps:
            for effect in _EFFECTS.decode(blob):
                apply(effect)
        reader.msgids.add_all([r[0] for r in steps if r[0] is not None])
    if signs:
        engine.signins.merge([SignIn(*r) for r in signs])
    return {"persons": len(rows), "chronic": len(slots), "journal": len(journal), "steps": len(steps),
            "sign_ins": len(signs)}
