"""The step-wise flow in the store (docs/contract.md section 11): the `step` table, its lookups, restoring visits.

Every committed step-wise transaction (and filing made online: 2501, 2502, the
operator's long-term filings), and every visit effect of a settlement or
a reversal, is one `step` row, written in the same transaction as the batch that
made it (store.SqliteStore.write): its effects (engine.core.visits) and, for a
transaction, its request and reply by msgid. At open the engine's visits are
rebuilt by applying every row's effects in order with the same
`Engine.apply_effect` the engine uses, so they are what they were.

A retry of a step-wise transaction finds its stored reply with StepJournalMap:
RAM holds what is not yet committed; the rest is a point query on the table's
msgid index, skipped when the reader's msgid filter says the msgid was never
committed.
"""
from __future__ import annotations

import sqlite3

import lz4.block
import msgspec

from engine.contract.wire import MSGPACK, Reply
from engine.core.records import StepChange
from engine.store.codec import CODECS
from engine.store.errors import StoreFailed
from engine.store.schema import READ_CHUNK_ROWS, STEP_COLS

_ENC = msgspec.msgpack.Encoder()
_BODY = msgspec.msgpack.Decoder(tuple[bytes, Reply])
_EFFECTS = msgspec.msgpack.Decoder(list)


def step_rows(steps: list[StepChange], first_seq: int) -> list[tuple]:
    """The `step` rows of a batch's step changes (STEP_COLS), numbered from first_seq."""
    rows = []
    for k, c in enumerate(steps):
        body = None
        if c.reply is not None:
            # The reply as MessagePack: its `result` rows (engine.core.records.ResultRows) render themselves.
            body = lz4.block.compress(_ENC.encode((c.input_raw, msgspec.Raw(MSGPACK.encoder.encode(c.reply)))))
        rows.append((first_seq + k, c.msgid or None, c.infno, c.fixmedins_code, c.mdtrt_id, c.time, *c.auth,
                     c.codec.fmt if c.codec is not None else None, body, _ENC.encode(c.effects)))
    return rows


class StepJournalMap:
    """The step journal backed by the store: msgid -> (infno, codec, raw input, reply, fixmedins_code)."""

    def __init__(self, reader):
        self._reader = reader
        self._pending: dict[str, tuple] = {}

    def get(self, msgid: str, default=None):
        hit = self._pending.get(msgid)
        if hit is None:
            hit = self._committed(msgid)
        return default if hit is None else hit

    def _committed(self, msgid: str):
        r = self._reader
        f = r.msgids
        if f is not None and type(msgid) is str and not f.may_contain(msgid):
            return None  # certainly never committed
        row = r._one("SELECT infno, fixmedins_code, codec, body_lz4 FROM step WHERE msgid = ?", (msgid,))
        if row is None:
            return None
        infno, code, codec_name, body = row
        try:
            raw, reply = _BODY.decode(lz4.block.decompress(body))
        except (lz4.block.LZ4BlockError, msgspec.DecodeError, msgspec.ValidationError) as e:
            raise StoreFailed(f"step row of msgid {msgid!r} is damaged: {e}") from None
        return infno, CODECS[codec_name], raw, reply, code

    def __setitem__(self, msgid: str, entry: tuple) -> None:
        assert msgid not in self._pending
        self._pending[msgid] = entry

    def pending(self) -> int:
        return len(self._pending)

    def committed(self, steps: list[StepChange]) -> None:
        for c in steps:
            if c.msgid:
                del self._pending[c.msgid]


def restore_effects(conn: sqlite3.Connection, apply) -> int:
    """Apply every step row's effects, in order, with `apply` (engine.core.engine.Engine.apply_effect: the
    visits of section 11 and the filings made online); the rows read."""
    n = 0
    cur = conn.execute("SELECT effects FROM step ORDER BY seq")
    while rows := cur.fetchmany(READ_CHUNK_ROWS):
        for (blob,) in rows:
            for effect in _EFFECTS.decode(blob):
                apply(effect)
        n += len(rows)
    return n


def step_msgids(conn: sqlite3.Connection):
    """Every committed step msgid, in chunks (the reader's msgid filter)."""
    cur = conn.execute("SELECT msgid FROM step WHERE msgid IS NOT NULL")
    while rows := cur.fetchmany(READ_CHUNK_ROWS):
        yield [r[0] for r in rows]


assert STEP_COLS[-1] == "effects"
