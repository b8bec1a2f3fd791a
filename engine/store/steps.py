"""The step-wise flow in the store (docs/contract.md section 11): the `step` table, its lookups, restoring visits.

Every committed step-wise transaction (and filing made online: 2501, 2502, the
operator's long-term filings), and every visit effect of a settlement or
a reversal, is one `step` row, written in the same transaction as the batch that
made it (store.SqliteStore.write): its effects (engine.core.visits) and, for a
transaction, its request and reply by msgid. At open the engine's visits are
rebuilt by applying every row's effects in order with the same
`Engine.apply_effect` the engine uses, so they are what they were.

A retry of a step-wise transaction finds its stored reply with StepJournalMap:
RAM holds what is not yet committed, and the seq of every committed msgid (read
back at open with the visits), so a committed reply is one point query on the
table's primary key. The table has no index on msgid: a batch's msgids are
spread over the whole key space, and an index of them rewrote hundreds of
16 KiB pages in every commit.
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


def step_rows(steps: list[StepChange], first_seq: int) -> tuple[list[tuple], dict[int, bytes]]:
    """The `step` rows of a batch's step changes (STEP_COLS), numbered from first_seq; and the replies'
    MessagePack encodings made for them, by the id of the reply: the framed transport sends the same bytes
    (engine.hub.hub.Hub._encode), so a step-wise reply is rendered once, not twice."""
    rows = []
    encoded: dict[int, bytes] = {}
    for k, c in enumerate(steps):
        body = None
        if c.reply is not None:
            # The reply as MessagePack: its `result` rows (engine.core.records.ResultRows) render themselves.
            enc = encoded[id(c.reply)] = MSGPACK.encoder.encode(c.reply)
            body = lz4.block.compress(_ENC.encode((c.input_raw, msgspec.Raw(enc))))
        rows.append((first_seq + k, c.msgid or None, c.infno, c.fixmedins_code, c.mdtrt_id, c.time, *c.auth,
                     c.codec.fmt if c.codec is not None else None, body, _ENC.encode(c.effects)))
    return rows, encoded


SQL_STEP_ENTRY = "SELECT infno, fixmedins_code, codec, body_lz4 FROM step WHERE "


def step_entry(row: tuple, msgid: str) -> tuple:
    """A committed step row (SQL_STEP_ENTRY) as the step journal's entry: (infno, codec, raw input, reply,
    fixmedins_code)."""
    infno, code, codec_name, body = row
    try:
        raw, reply = _BODY.decode(lz4.block.decompress(body))
    except (lz4.block.LZ4BlockError, msgspec.DecodeError, msgspec.ValidationError) as e:
        raise StoreFailed(f"step row of msgid {msgid!r} is damaged: {e}") from None
    return infno, CODECS[codec_name], raw, reply, code


class StepJournalMap:
    """The step journal backed by the store: msgid -> (infno, codec, raw input, reply, fixmedins_code)."""

    def __init__(self, reader):
        self._reader = reader
        self._pending: dict[str, tuple] = {}
        self._seq: dict[str, int] = {}  # every committed msgid -> its step row (restore, committed)

    def get(self, msgid: str, default=None):
        hit = self._pending.get(msgid)
        if hit is None:
            hit = self._committed(msgid)
        return default if hit is None else hit

    def _committed(self, msgid: str):
        seq = self._seq.get(msgid)
        if seq is None:
            return None  # never committed
        row = self._reader._one(SQL_STEP_ENTRY + "seq = ?", (seq,))
        if row is None:
            raise StoreFailed(f"step row {seq} of msgid {msgid!r} is missing")
        return step_entry(row, msgid)

    def __setitem__(self, msgid: str, entry: tuple) -> None:
        assert msgid not in self._pending
        self._pending[msgid] = entry

    def pending(self) -> int:
        return len(self._pending)

    def committed(self, steps: list[StepChange], rows: list[tuple]) -> None:
        """The batch's steps are durable, in their `step` rows (step_rows: seq first, msgid second). Called
        on the writer's thread: each msgid is in `_seq` before it leaves `_pending`, so a lookup on the
        engine's thread in between finds it in one or the other."""
        seqs, pending = self._seq, self._pending
        for c, row in zip(steps, rows):
            if c.msgid:
                seqs[c.msgid] = row[0]
                del pending[c.msgid]

    def restore(self, seqs: dict[str, int]) -> None:
        """The committed msgids and their rows, as restore_effects read them at open."""
        self._seq = seqs


def restore_effects(conn: sqlite3.Connection, apply) -> dict[str, int]:
    """Apply every step row's effects, in order, with `apply` (engine.core.engine.Engine.apply_effect: the
    visits of section 11 and the filings made online); the committed msgids and their rows' seq
    (StepJournalMap.restore)."""
    seqs: dict[str, int] = {}
    cur = conn.execute("SELECT seq, msgid, effects FROM step ORDER BY seq")
    while rows := cur.fetchmany(READ_CHUNK_ROWS):
        for seq, msgid, blob in rows:
            for effect in _EFFECTS.decode(blob):
                apply(effect)
            if msgid is not None:
                seqs[msgid] = seq
    return seqs


assert STEP_COLS[-1] == "effects"

from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
