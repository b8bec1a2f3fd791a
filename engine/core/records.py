"""The records the settlement core hands to whatever keeps its history (docs/contract.md section 7).

A Request goes into Engine.handle_batch; a Settled is what a reversal needs of
its settlement; a Change is one committed settlement or reversal, what a durable
store writes (engine.store); a Pending is a settlement between its checks and
its kernels; ResultRows is the per-line `result` of a settlement reply, kept as
slices of its round's arrays. The kinds below are the one definition of what
the journal's `kind` and `acc_kind` columns hold.
"""
from __future__ import annotations

from dataclasses import dataclass

import msgspec

from engine.contract.wire import JSON, Codec, Reply
from engine.core import kernels

# Which accumulators a settlement moves (Settled.kind, Pending.kind; the journal's
# acc_kind column): section 6's inpatient, outpatient and chronic-disease ones.
ACC_INPATIENT, ACC_OUTPATIENT, ACC_CHRONIC = 0, 1, 2
# What a change is (Change.kind; the journal's kind column).
CHANGE_SETTLE, CHANGE_REVERSE = "settle", "reverse"


# The records below are dataclasses (repr, eq) with hand-written __init__: the
# generated one would run interpreted in the compiled module, once per request.
@dataclass(slots=True, init=False)
class Request:
    body: bytes
    codec: Codec
    clock: str | None  # the reply's time; None: the wall clock; replay: inf_time
    # Set by handle_batch, for a caller's bookkeeping (the server's metrics): the
    # envelope's infno when it is a string, "" when it is not, None when the body
    # did not decode. Saves a second decode of every body.
    infno: str | None
    # Set with infno: the envelope's fixmedins_code when it is a string, else "" (the hub's request log).
    fixmedins_code: str
    # The credential the transport verified (section 10: the engine checks its scope and
    # sign-ins); None: nothing of section 10 is checked (replay, `yidi serve --no-auth`).
    cred: object

    def __init__(self, body: bytes, codec: Codec = JSON, clock: str | None = None, cred: object = None):
        self.body = body
        self.codec = codec
        self.clock = clock
        self.infno = None
        self.fixmedins_code = ""
        self.cred = cred


@dataclass(slots=True, init=False)
class Settled:
    """A committed settlement, enough to answer its reversal (section 7)."""

    setl_id: str
    outpatient: bool
    fixmedins_code: str
    mdtrtarea_admvs: str
    insuplc_admdvs: str
    mdtrt_id: str
    psn: int
    psn_no: str
    kind: int  # ACC_INPATIENT, ACC_OUTPATIENT or ACC_CHRONIC
    cd_slot: int
    year: int
    amounts: dict  # setlinfo money fields, int fen
    burden: int
    second: int
    info: dict  # the non-money setlinfo fields
    reversed: bool
    batch: str | None  # section 11: the batch (chrg_bchno; "" a stay) a step-wise settlement settled; None one-shot

    def __init__(self, setl_id, outpatient, fixmedins_code, mdtrtarea_admvs, insuplc_admdvs, mdtrt_id, psn,
                 psn_no, kind, cd_slot, year, amounts, burden, second, info, reversed=False, batch=None):
        self.setl_id = setl_id
        self.outpatient = outpatient
        self.fixmedins_code = fixmedins_code
        self.mdtrtarea_admvs = mdtrtarea_admvs
        self.insuplc_admdvs = insuplc_admdvs
        self.mdtrt_id = mdtrt_id
        self.psn = psn
        self.psn_no = psn_no
        self.kind = kind
        self.cd_slot = cd_slot
        self.year = year
        self.amounts = amounts
        self.burden = burden
        self.second = second
        self.info = info
        self.reversed = reversed
        self.batch = batch


@dataclass(slots=True, init=False)
class Change:
    """One committed settlement or reversal of a batch: what a durable store must write.

    The person's accumulators after the batch are read at commit time through
    Engine.person_accumulators (rows `settled.psn`, slot `settled.cd_slot`).
    """

    kind: str  # CHANGE_SETTLE or CHANGE_REVERSE
    msgid: str
    infno: str
    fixmedins_code: str
    mdtrtarea_admvs: str
    insuplc_admdvs: str
    setl_id: str  # the id of this settlement or of this reversal
    setl_time: str
    codec: Codec  # of the request
    input_raw: bytes  # the request's raw `input`
    reply: Reply
    settled: Settled  # the settlement (for a reversal: the one it reverses)
    auth: tuple  # paasid, sign_no, opter, opter_name of the request (section 10; engine.core.signin)
    # Filled by the history's change sink (engine.core.history) as the change is
    # made: a store's journal sequence number, journal row and uncompressed body.
    seq: int
    row: object
    body: object

    def __init__(self, kind, msgid, infno, fixmedins_code, mdtrtarea_admvs, insuplc_admdvs, setl_id, setl_time,
                 codec, input_raw, reply, settled, auth=("", "", "", "")):
        self.kind = kind
        self.msgid = msgid
        self.infno = infno
        self.fixmedins_code = fixmedins_code
        self.mdtrtarea_admvs = mdtrtarea_admvs
        self.insuplc_admdvs = insuplc_admdvs
        self.setl_id = setl_id
        self.setl_time = setl_time
        self.codec = codec
        self.input_raw = input_raw
        self.reply = reply
        self.settled = settled
        self.auth = auth
        self.seq = -1
        self.row = None
        self.body = None


@dataclass(slots=True, init=False)
class StepChange:
    """One committed transaction of section 11, or a visit effect of a settlement or reversal: what a
    durable store must write so that the visits come back as they were (engine.core.visits).

    msgid "" and reply None: an effect with no reply of its own (a step-wise settlement's
    "settle", a reversal's "unsettle"; the settlement journal holds those transactions).
    """

    msgid: str
    infno: str
    fixmedins_code: str
    mdtrt_id: str
    time: str
    codec: Codec | None
    input_raw: bytes
    reply: Reply | None
    effects: list
    auth: tuple

    def __init__(self, msgid, infno, fixmedins_code, mdtrt_id, time, codec, input_raw, reply, effects, auth):
        self.msgid = msgid
        self.infno = infno
        self.fixmedins_code = fixmedins_code
        self.mdtrt_id = mdtrt_id
        self.time = time
        self.codec = codec
        self.input_raw = input_raw
        self.reply = reply
        self.effects = effects
        self.auth = auth


@dataclass(slots=True, init=False)
class Pending:
    """A settlement or pre-settlement that passed the checks done before its lines."""

    idx: int
    env: object
    data: object
    n_lines: int  # its fee lines are the round's next n_lines (_Round.lines)
    commit: bool
    outpatient: bool
    now: str
    err: object  # the first failing check between the schema and the lines (a Refused), or None
    # filled when err is None
    psn: int
    kind: int  # ACC_INPATIENT, ACC_OUTPATIENT or ACC_CHRONIC
    pol: int
    lv: int
    year: int
    medfee: int
    future: bool  # its settlement day is after the hub's clock day (E_DATE, section 7 v2)
    reduction_bp: int
    pre_status: int
    cls: str
    cd_slot: int
    cd_pol: int
    acct_ok: int
    retired310: int
    journal_input: object  # (codec, raw input bytes) for the journal
    auth: tuple  # Change.auth
    prov: int  # the treatment province (the first two digits of its region), for the catalogue
    # Section 11: an upload (2204, 2301) is (visit, batch); a step-wise settlement has step (visit, batch)
    # and claims, the hospital's split totals in fen (None: not sent).
    upload: object
    step: object
    claims: object

    def __init__(self, idx, env, data, n_lines, commit, outpatient, now, journal_input=None):
        self.idx = idx
        self.env = env
        self.data = data
        self.n_lines = n_lines
        self.commit = commit
        self.outpatient = outpatient
        self.now = now
        self.err = None
        self.psn = -1
        self.kind = 0
        self.pol = -1
        self.lv = 0
        self.year = 0
        self.medfee = 0
        self.future = False
        self.reduction_bp = 0
        self.pre_status = 0
        self.cls = ""
        self.cd_slot = -1
        self.cd_pol = -1
        self.acct_ok = 0
        self.retired310 = 0
        self.journal_input = journal_input
        self.auth = ("", "", "", "")
        self.prov = -1
        self.upload = None
        self.step = None
        self.claims = None


class ResultRows:
    """The per-line `result` of one settlement, kept as slices of the round's arrays.

    The round's decoded fee lines are not kept: only their feedetl_sn (r.lines.sns)
    and the parsed numbers, so a journaled reply holds a few dozen bytes a line.
    """

    __slots__ = ("lo", "hi", "r")

    def __init__(self, lo: int, hi: int, r):
        # r: the round's arrays (engine.core.engine._RoundArrays, or a store's rows read back)
        self.lo, self.hi, self.r = lo, hi, r

    def to_raw(self, fmt: int) -> msgspec.Raw:
        r = self.r
        em = getattr(r, "emitter", None)
        if em is None:  # the round's first reply to be encoded
            em = r.emitter = kernels.RowEmitter(r.lines.sns, r.split, r.cat)
        return msgspec.Raw(em.emit(self.lo, self.hi, fmt))


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
