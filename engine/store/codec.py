"""The journal's rows and bodies: a change encoded for the journal, and a stored reply decoded again.

A journal row holds a settlement's or reversal's clearing and reconciliation
columns (schema.JOURNAL_COLS, money in integer fen); its body (the journal_blob
table) holds the request's raw input, the reply without its `result` as
MessagePack values, and the `result` rows packed as LINE_DTYPE integers,
rendered again on demand (StoredRows renders exactly like ResultRows).
JournalRows builds both as the engine makes each change (its change sink).
"""
from __future__ import annotations

import struct
import types

import lz4.block
import msgspec
import numpy as np

from core_ext._pack import LINE_RECORD_BYTES, pack_lines

from engine.contract.wire import JSON, MSGPACK, Reply
from engine.core import kernels
from engine.core.records import CHANGE_REVERSE, CHANGE_SETTLE, Change, ResultRows
from engine.store.schema import AMOUNT_KEYS, INFO_KEYS

CODECS = {"json": JSON, "msgpack": MSGPACK}  # the journal_blob codec column -> the request's codec

# One `result` row as the journal keeps it (the catalogue entry the line matched,
# lv 0 for none, and the split); the line's amount, count and price are read
# again from the stored request.
LINE_DTYPE = np.dtype([
    ("cap_micro", "<i8"), ("fulamt_fen", "<i4"), ("overlmt_fen", "<i4"), ("preselfpay_fen", "<i4"),
    ("inscp_fen", "<i4"), ("selfpay_bp", "<i2"), ("lv", "i1"), ("memo", "i1"),
])
assert LINE_DTYPE.itemsize == LINE_RECORD_BYTES  # core_ext._pack.pack_lines writes them



def pack_result_rows(rr: ResultRows, cache: dict) -> bytes:
    """The `result` rows of a settlement reply as LINE_DTYPE records.

    The rows of one round are packed once (`cache` by round) and sliced per settlement.
    """
    r = rr.r
    packed = cache.get(id(r))
    if packed is None:
        # Only settled rounds are packed, whose lines passed the section 1 limits
        # (pack_lines raises ValueError on an amount outside int32).
        packed = (r, pack_lines(r.split, r.cat))  # keeps r alive so that id(r) stays its own
        cache[id(r)] = packed
    size = LINE_DTYPE.itemsize
    return packed[1][rr.lo * size : rr.hi * size]


class StoredRows:
    """The `result` of a reply read back from the journal; renders exactly like ResultRows.

    The lines are read again from the stored request's `feedetail`, or, for a step-wise
    settlement (whose request names a visit, not lines), from the columns stored with it.
    """

    __slots__ = ("codec", "input_raw", "packed", "lines")

    def __init__(self, codec, input_raw: bytes, packed: bytes, lines=None):
        self.codec, self.input_raw, self.packed, self.lines = codec, input_raw, packed, lines

    def to_raw(self, fmt: int) -> msgspec.Raw:
        a = np.frombuffer(self.packed, LINE_DTYPE)
        m = len(a)
        ns = types.SimpleNamespace
        if self.lines is None:
            lines = self.codec.settle.decode(self.input_raw).feedetail
            assert len(lines) == m
            gathered = kernels.gather_lines(lines)
        else:
            gathered = self.lines
            assert len(gathered.sns) == m
        row = np.where(a["lv"] > 0, np.arange(m, dtype=np.int32), np.int32(-1)).astype(np.int32)
        arrays = ns(
            lines=gathered, row=row,
            cat=kernels.CatalogueArrays(lv=np.ascontiguousarray(a["lv"], np.int8),
                                        selfpay_bp=np.ascontiguousarray(a["selfpay_bp"], np.int32),
                                        cap_micro=np.ascontiguousarray(a["cap_micro"], np.int64),
                                        lmt=np.zeros(m, np.int8)),
            split=kernels.stored_split(gathered, row, memo=a["memo"], fulamt_fen=a["fulamt_fen"],
                                       overlmt_fen=a["overlmt_fen"], presel_fen=a["preselfpay_fen"],
                                       inscp_fen=a["inscp_fen"]),
        )
        return ResultRows(0, m, arrays).to_raw(fmt)


_msgpack_encode = msgspec.msgpack.Encoder().encode
_msgpack_decode = msgspec.msgpack.Decoder().decode
_BODY_HEAD = struct.Struct("<II")  # bytes of the input, bytes of the reply
# The keys of a journaled reply's output: a settlement's and a reversal's (section 7).
_SETTLE_OUTPUT = ("setlinfo", "setldetail", "result")
_REVERSE_OUTPUT = ("setlinfo",)
# The keys of setlinfo and of a setldetail entry, in the engine's order, settlement
# and reversal alike: the journal keeps the values only.
SETLINFO_KEYS = (*AMOUNT_KEYS, "balc", "cvlserv_pay", "hifes_pay", "maf_pay", "oth_pay", "hosp_part_amt",
                 *INFO_KEYS, "setl_time", "setl_id")
SETLDETAIL_KEYS = ("fund_pay_type", "fund_pay_type_name", "fund_payamt")


def body_of(input_raw: bytes, reply: Reply, lines: bytes | None) -> bytes:
    """A journal row's request and reply, uncompressed (prepare compresses it: see the journal_blob table)."""
    out = reply.output
    setlinfo = out["setlinfo"]
    # The keys' order: checked on the first settlement and reversal of each batch (check_reply_keys).
    assert len(setlinfo) == len(SETLINFO_KEYS)
    if lines is not None:
        assert len(out) == len(_SETTLE_OUTPUT)
        detail = [list(d.values()) for d in out["setldetail"]]
    else:
        assert len(out) == len(_REVERSE_OUTPUT)
        detail = None
    packed = _msgpack_encode((reply.infcode, reply.inf_refmsgid, reply.refmsg_time, reply.respond_time,
                              reply.err_msg, reply.err_code, list(setlinfo.values()), detail))
    return b"".join((_BODY_HEAD.pack(len(input_raw), len(packed)), input_raw, packed, lines or b""))


def check_reply_keys(reply: Reply) -> None:
    """The keys of a journaled reply are exactly those body_of leaves out, in their order."""
    out = reply.output
    assert tuple(out) in (_SETTLE_OUTPUT, _REVERSE_OUTPUT), f"reply output keys {tuple(out)}"
    assert tuple(out["setlinfo"]) == SETLINFO_KEYS, "setlinfo keys differ from SETLINFO_KEYS"
    for d in out.get("setldetail", ()):
        assert tuple(d) == SETLDETAIL_KEYS, "setldetail keys differ from SETLDETAIL_KEYS"


def step_input(input_raw: bytes, rr: ResultRows) -> bytes:
    """The stored input of a step-wise settlement: its request's input with the columns of the lines it settled
    (unpack_body(stepwise=True) reads both back)."""
    ln, lo, hi = rr.r.lines, rr.lo, rr.hi
    return _msgpack_encode((input_raw, ln.sns[lo:hi], ln.amt_fen[lo:hi].tobytes(),
                            ln.cnt_ten_thousandths[lo:hi].tobytes(), ln.pric_micro[lo:hi].tobytes(),
                            ln.day[lo:hi].tobytes()))


def _step_lines(stored: bytes) -> tuple[bytes, kernels.Lines]:
    input_raw, sns, amt, cnt, pric, day = _msgpack_decode(stored)
    n = len(sns)
    return input_raw, kernels.Lines(None, sns, np.frombuffer(amt, np.int64), np.frombuffer(cnt, np.int64),
                                    np.frombuffer(pric, np.int64), np.frombuffer(day, np.int32),
                                    np.zeros(n, np.uint8), 0)


def unpack_body(body_lz4: bytes, codec, stepwise: bool = False) -> tuple[bytes, Reply]:
    """The raw input and the reply (its `result` rendered again on demand) of a journal row; `stepwise`: a
    step-wise settlement's (its input holds the lines' columns too: step_input)."""
    body = lz4.block.decompress(body_lz4)
    n_in, n_reply = _BODY_HEAD.unpack_from(body)
    at = _BODY_HEAD.size
    input_raw = body[at : at + n_in]
    lines = None
    if stepwise:
        input_raw, lines = _step_lines(input_raw)
    at += n_in
    infcode, refmsgid, refmsg_time, respond_time, err_msg, err_code, setlinfo, detail = _msgpack_decode(
        body[at : at + n_reply])
    at += n_reply
    if len(setlinfo) != len(SETLINFO_KEYS):
        raise ValueError(f"setlinfo of {len(setlinfo)} values, not {len(SETLINFO_KEYS)}")
    output: dict = {"setlinfo": dict(zip(SETLINFO_KEYS, setlinfo))}
    if detail is not None:
        if any(len(d) != len(SETLDETAIL_KEYS) for d in detail):
            raise ValueError("a setldetail entry of the wrong length")
        output["setldetail"] = [dict(zip(SETLDETAIL_KEYS, d)) for d in detail]
        output["result"] = StoredRows(codec, input_raw, body[at:], lines)
    else:
        assert at == len(body)
    return input_raw, Reply(infcode, refmsgid, refmsg_time, respond_time, err_msg, err_code, output)


# Positions in AMOUNT_KEYS and INFO_KEYS (the rows are built from the dicts' values).
_A_HIFP, _A_HIFMI, _A_HIFOB, _A_FUND, _A_ACCT = (
    AMOUNT_KEYS.index(k) for k in ("hifp_pay", "hifmi_pay", "hifob_pay", "fund_pay_sumamt", "acct_pay"))
_I_POOL_PROP, _I_FILING_CLASS, _I_INSUTYPE, _I_MED_TYPE, _I_CLR_TYPE = (
    INFO_KEYS.index(k) for k in ("pool_prop_selfpay", "filing_class", "insutype", "med_type", "clr_type"))
ROW_PSN, ROW_CD_SLOT = 11, 19  # of a journal row (JournalRows.encode), in the journal's column order


class JournalRows:
    """The store's change sink (engine.core.history.ChangeSink): numbers each change and builds its
    journal row and body while it is fresh.

    Run as the engine makes each change, when its records are still in the CPU's
    caches (the store's prepare, a batch later, would fetch them from memory again).
    """

    def __init__(self, first_seq: int):
        self.next_seq = first_seq  # the journal seq the next change gets
        self._packed_rounds: dict = {}

    def encode(self, c: Change) -> None:
        """Set c.seq, c.row (the journal row) and c.body (uncompressed)."""
        rec = c.settled
        # In the order of AMOUNT_KEYS and INFO_KEYS (prepare checks the keys of each batch's first change).
        a = list(rec.amounts.values())
        info = list(rec.info.values())
        assert len(a) == len(AMOUNT_KEYS) and len(info) == len(INFO_KEYS)
        # The ledger's legs are columns of the journal row (the `posting` view):
        # the identities they rest on (engine.core.ledger.postings asserts the same).
        hifp, hifmi, hifob, acct = a[_A_HIFP], a[_A_HIFMI], a[_A_HIFOB], a[_A_ACCT]
        assert hifp + hifmi + hifob == a[_A_FUND] and hifp >= 0 and hifmi >= 0 and hifob >= 0 and acct >= 0
        assert c.fixmedins_code == rec.fixmedins_code
        seq = self.next_seq
        self.next_seq = seq + 1
        if c.kind == CHANGE_SETTLE:
            sign, reversed_id = 1, None
            assert c.setl_id == rec.setl_id == "S" + c.msgid
            rr = c.reply.output["result"]
            if id(rr.r) not in self._packed_rounds:
                self._packed_rounds.clear()  # a round's settlements come one after another
            rows = pack_result_rows(rr, self._packed_rounds)
        else:
            assert c.kind == CHANGE_REVERSE and rec.reversed and c.setl_id == "S" + c.msgid
            sign, reversed_id, rows = -1, rec.setl_id, None
        c.seq = seq
        c.row = (
            seq, c.msgid, c.kind, c.infno, c.setl_id, reversed_id, c.setl_time, rec.insuplc_admdvs,
            rec.mdtrtarea_admvs, rec.fixmedins_code, rec.mdtrt_id, rec.psn, rec.psn_no, info[_I_INSUTYPE],
            info[_I_MED_TYPE], info[_I_CLR_TYPE], info[_I_FILING_CLASS], info[_I_POOL_PROP],
            rec.kind, rec.cd_slot, rec.year, *(a if sign == 1 else [-v for v in a]),
            sign * rec.burden, sign * rec.second, *c.auth, rec.batch,
        )
        c.body = body_of(c.input_raw if rec.batch is None or sign == -1 else step_input(c.input_raw, rr), c.reply,
                         rows)


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
