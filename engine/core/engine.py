"""The settlement pipeline: a batch of envelopes in, a batch of replies out.

Data flows one way (STYLE.md): envelope bytes -> decoded request -> per-settlement
checks in Python (the control plane: institution, person, policy, filing class)
-> batch arrays -> compiled kernels (lines gathered, matched and split; funds
paid, person by person, in order) -> replies.

A batch is cut into rounds. A request that depends on something an earlier,
not yet computed request of the same round may change (the same msgid, the same
visit, a reversal or a person query touching a person of the round) closes the
round first, so the outcome always equals processing the requests one at a time.
"""
from __future__ import annotations

import array
import datetime as _dt
import logging
import threading

import msgspec
import numpy as np
import pyarrow.compute as pc

from engine.core import kernels
from engine.contract.credential import OPERATOR
from engine.core.filing import FILING_EFFECTS, FilingMixin, OnlineFilings, filing_last_days
from engine.contract import money
from engine.core import reconcile
from engine.contract.protocol import (
    CANDIDATE_ORDER, COMMIT_INFNOS, E_DUPLICATE_VISIT, E_FORBIDDEN, E_LIMIT, E_MAINTENANCE, E_MISMATCH, E_MSGID_REUSED, E_NO_POLICY,
    E_SCHEMA, E_UNKNOWN_INSTITUTION, E_UNKNOWN_PERSON, E_UNSUPPORTED, E_VOIDED, EMERGENCY, ENVELOPE_DEPTH_MAX,
    ERR_MESSAGES, FILING_CLASS_OF_TYPE, FILING_INFNOS, INFNO_LONG_FILING, INFNO_PERSON, INFNO_SIGN_IN,
    INFNO_SIGN_OUT, LINES_MAX, LOCAL,
    MED_TYPE_CHRONIC, MED_TYPES_EMERGENCY, MED_TYPES_INPATIENT, MED_TYPES_OUTPATIENT, OUTPATIENT_INFNOS,
    REDUCTION_KEY_OF_CLASS, REQUEST_DAY_MAX, REQUEST_DAY_MIN, REQUEST_YEAR_MAX, REQUEST_YEAR_MIN, REVERSE_INFNOS,
    SETTLE_INFNOS, STEP_INFNOS, UNFILED, WAIVED, Refused, region_covers,
)
from engine.contract.wire import Codec, DecodeError, Reply
from engine.core.history import History, MemoryHistory
from engine.core.maintenance import Schedule
from engine.core.round import Flush, Journaled, Round
from engine.core.settling import SettlingMixin
from engine.core.signin import SignIns, journal_auth
from engine.core.stepwise import StepwiseMixin
from engine.core.visits import VisitBook
from engine.core.records import ACC_CHRONIC, ACC_INPATIENT, ACC_OUTPATIENT, Change, Pending, Request
from engine.world.loader import DAY_OPEN, World

I8, I16, I32, I64, U8 = np.int8, np.int16, np.int32, np.int64, np.uint8
_fmt = kernels.format_fen

# The settlement fields that must be non-empty strings, in the order they are checked.
_SETTLE_STR_FIELDS = ("mdtrtarea_admvs", "insuplc_admdvs", "fixmedins_code", "msgid", "psn_no", "mdtrt_id", "med_type",
                      "insutype")


log = logging.getLogger("yidi.engine")


def now_text() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")



def world_parts(world: World, chronic_withdrawn: frozenset = frozenset()) -> dict:
    """What the engine reads of a world, built for it: Engine attributes by name (section 2).

    Pure: it reads `world` only, so a reload builds the parts of the next world on a
    worker thread while this engine serves (Engine.apply_world puts them in force).
    The catalogue index of a national world takes seconds: it is built on a thread
    of its own (the kernel runs without the GIL) while the rest is made.
    """
    cat_box: list = []
    cat_thread = threading.Thread(target=lambda: cat_box.append(kernels.Catalogue(world)), name="catalogue-index")
    cat_thread.start()
    ptype = world.psn_type
    # Filings by person (section 4), as arrays ordered by person: the class, the
    # destination, the first and the last day in force. int64 array.array, not numpy:
    # _filing_class reads them one cell at a time, and an array.array cell is a plain
    # int (a numpy one is a numpy scalar).
    order = np.argsort(world.fil_psn, kind="stable")
    parts = dict(
        world=world,
        inst={c: (a, int(lv)) for c, a, lv in zip(world.inst_code, world.inst_admdvs, world.inst_lv)},
        psn_index=kernels.KeyIndex(world.psn_no),
        # Person columns: low-cardinality ones dictionary-encoded (what the hot path
        # reads), the rest read from Arrow on demand (only 1101 answers them).
        psn_no=_Lazy(world.psn_no), psn_certno=_Lazy(world.psn_certno), psn_name=_Lazy(world.psn_name),
        psn_type=_Lazy(world.psn_type),
        psn_insuplc=_encoded_list(world.psn_insuplc), psn_insutype=_encoded_list(world.psn_insutype),
        psn_retired=pc.or_(pc.starts_with(ptype, "12"), pc.equal(ptype, "1300")).to_pylist(),
        by_certno=kernels.KeyIndex(world.psn_certno),
        fil_start=_cells(np.searchsorted(world.fil_psn[order], np.arange(world.n_persons + 1))),
        fil_row=_cells(order),
        fil_cls=[FILING_CLASS_OF_TYPE[t] for t in world.fil_type],
        fil_dest=world.fil_dest,
        fil_begn=_cells(world.fil_begn),
        fil_last=_cells(filing_last_days(world)),
        policies=world.policies,
        pol=kernels.PolicyTables(world.policies),
        # Chronic qualifications in force: (person, disease) -> slot of the state arrays.
        cd_slots={(int(p), d): k for k, (p, d) in enumerate(zip(world.chr_psn, world.chr_dise))
                  if k not in chronic_withdrawn},
    )
    cat_thread.join()
    if not cat_box:
        raise RuntimeError("building the catalogue index failed (see the thread's traceback)")
    parts["cat"] = cat_box[0]
    return parts


class Engine(SettlingMixin, StepwiseMixin, FilingMixin):
    """The compiled settlement engine over one world, state in memory (sections 3-7)."""

    def __init__(self, world: World, clock: str = "wall", history: History | None = None,
                 chronic_years: list[int] | None = None, chronic_withdrawn: frozenset = frozenset()):
        """`clock` is "wall" (the server) or "inf_time" (replay: the request's inf_time).

        history: the lookups of what earlier requests committed and the change sink
        (engine.core.history); None keeps them in RAM. chronic_years: the year each
        chronic slot's hifp_cd counts in, when known (a store's); else the person's
        acc_year of the world. chronic_withdrawn: the chronic slots no longer in
        force (a reload withdrew them: engine.world.merge).
        """
        assert clock in ("wall", "inf_time")
        self.clock_inf_time = clock == "inf_time"
        for name, value in world_parts(world, chronic_withdrawn).items():
            setattr(self, name, value)
        self.chronic_withdrawn = frozenset(chronic_withdrawn)
        n_slots = len(world.chr_dise)
        self.state = kernels.PersonState(world, n_slots)
        self.state.cd_val_fen[:n_slots] = world.chr_hifp_cd
        self.state.cd_year[:n_slots] = self.state.acc_year[world.chr_psn]
        if chronic_years is not None:
            assert len(chronic_years) == n_slots
            self.state.cd_year[:n_slots] = chronic_years
        # Filings made online (2501, the admin's long-term filings), beside the world's (engine.core.filing).
        self.filings_online = OnlineFilings()
        # The history's members, read once: the hot path looks them up as attributes.
        h = MemoryHistory() if history is None else history
        self.journal = h.journal  # msgid -> (infno, codec, input, reply)
        self.settled = h.settled  # setl_id -> Settled
        self.open_visits = h.open_visits
        self.recon = h.recon  # 3201/3202 (engine.core.reconcile): every committed change
        self.on_change = h.on_change  # called with each Change as it is made
        self.changes: list[Change] = []
        self.signins = SignIns()  # section 10 (engine.core.signin)
        # Section 11 (engine.core.stepwise): the visits, the replies of step-wise transactions by msgid,
        # and what they changed, for a store to write (None: no store takes them).
        self.visits = VisitBook()
        self.step_journal = h.step_journal
        self.step_changes: list | None = None
        self._cred = None  # the credential of the request being dispatched (Request.cred)
        # Section 12 (engine.core.maintenance): the maintenance windows in force, None without a file;
        # replaced whole (a reload) between batches. Refusals counted by the window's admdvs.
        self.maintenance: Schedule | None = None
        self.maintenance_refused: dict[str, int] = {}
        self._clock_text, self._clock_value = "", 0  # _clock_day's last answer
        # Set while a request changes state inside its dispatch (a reversal's commit): a bug
        # met then cannot be answered as a refusal, since something has changed.
        self._committing = False

    def take_changes(self) -> list[Change]:
        """What the batches since the last call committed, in order; a store writes them durably."""
        out, self.changes = self.changes, []
        return out

    def take_step_changes(self) -> list:
        """The step-wise transactions and visit effects since the last call, in order (engine.core.stepwise)."""
        out = self.step_changes or []
        if self.step_changes is not None:
            self.step_changes = []
        return out

    def apply_effect(self, effect: list) -> None:
        """Apply one committed effect: a filing's (engine.core.filing.OnlineFilings) or a visit's
        (engine.core.visits.VisitBook). A store applies its rows' effects again at open through this."""
        if effect[0] in FILING_EFFECTS:
            self.filings_online.apply(effect, self.psn_index.get(effect[2]) if effect[0] == "file" else None)
        else:
            self.visits.apply(effect)

    def apply_world(self, parts: dict, chronic_withdrawn: frozenset) -> list:
        """Put a reloaded world in force in one step, between batches (engine.world.merge made it: the
        persons and chronic slots of this engine in their rows, new ones after them; world_parts built
        `parts`). The accumulators of the persons and slots this engine holds are kept; new ones start
        from the world's values (section 2). Returns the parts it replaced."""
        world = parts["world"]
        n_slots = len(world.chr_dise)
        assert world.n_persons >= len(self.state.balc_fen) and n_slots >= len(self.world.chr_dise)
        old = [self.state]
        self.state = kernels.grown_state(self.state, world, len(self.world.chr_dise), n_slots)
        for name, value in parts.items():
            old.append(getattr(self, name))
            setattr(self, name, value)
        self.chronic_withdrawn = frozenset(chronic_withdrawn)
        # The parts replaced, for the caller to let go of: freeing a national world's (lists of a million
        # persons, the catalogue index) takes a while, which the event loop need not wait for.
        return old

    # ------------------------------------------------------------ accumulators (history.AccumulatorSource)

    def person_accumulators(self, psns: np.ndarray) -> list[list[int]]:
        """Of persons `psns`, now: balc, acc_year, hifp_ip, hifp_op, ded_op, burden2, second_paid (fen, year)."""
        st = self.state
        return [st.balc_fen[psns].tolist(), st.acc_year[psns].tolist(), st.hifp_ip_fen[psns].tolist(),
                st.hifp_op_fen[psns].tolist(), st.ded_op_fen[psns].tolist(), st.burden2_fen[psns].tolist(),
                st.second_paid_fen[psns].tolist()]

    def chronic_accumulators(self, slots: np.ndarray) -> tuple[list[int], list[int]]:
        """Of chronic slots `slots`, now: hifp_cd (fen) and the year it counts in."""
        st = self.state
        return st.cd_val_fen[slots].tolist(), st.cd_year[slots].tolist()

    # ------------------------------------------------------------ batch entry

    def handle_batch(self, reqs: list[Request]) -> list[Reply]:
        replies: list[Reply | None] = [None] * len(reqs)
        rnd = Round()
        for idx, req in enumerate(reqs):
            # Section 7 (v2): the depth is read from the raw bytes before any decoder
            # recurses into them, ignored fields included.
            if kernels.nesting_depth(req.body, req.codec.is_json, ENVELOPE_DEPTH_MAX) > ENVELOPE_DEPTH_MAX:
                replies[idx] = self._refusal(None, req.clock or now_text(), Refused(
                    E_SCHEMA, f"envelope nested deeper than {ENVELOPE_DEPTH_MAX} levels"))
                continue
            try:
                env = req.codec.envelope.decode(req.body)
            except DecodeError as e:
                replies[idx] = self._refusal(None, req.clock or now_text(), Refused(E_SCHEMA, f"envelope: {e}"))
                continue
            req.infno = env.infno if isinstance(env.infno, str) else ""
            if isinstance(env.fixmedins_code, str):
                req.fixmedins_code = env.fixmedins_code
            now = req.clock or (
                env.inf_time if self.clock_inf_time and isinstance(env.inf_time, str) else now_text()
            )
            if now is env.inf_time and not self._request_time_ok(now):
                # The replay clock is the request's inf_time: a time of the request like any other.
                replies[idx] = self._refusal(env.msgid, now_text(), Refused(
                    E_SCHEMA, f"inf_time: not a time within {REQUEST_YEAR_MIN}-{REQUEST_YEAR_MAX}"))
                continue
            self._cred = req.cred
            for attempt in (0, 1):
                try:
                    replies[idx] = self._dispatch(idx, env, req.codec, now, rnd)
                    break
                except Refused as r:
                    replies[idx] = self._refusal(env.msgid, now, r)
                    if r.code == E_MAINTENANCE:
                        self._count_maintenance(r)
                    break
                except Journaled as j:
                    replies[idx] = j.reply
                    break
                except Flush:
                    # The request depends on the open round: compute the round, then
                    # retry on an empty one, where it cannot conflict again.
                    assert attempt == 0 and rnd.pending
                    self._run_round(rnd, replies)
                    rnd = Round()
                except Exception as e:  # noqa: BLE001  (section 7, v2: no request stops the engine)
                    # A bug met while checking one request: it is answered, logged, and the
                    # others go on. The checks change nothing before a request joins the
                    # round or commits; a bug past a reversal's commit point changed state,
                    # and cannot be refused: it stops the engine (the hub fails stop).
                    if self._committing:
                        raise
                    log.exception("request %d (infno %r, msgid %r) failed in its checks", idx, env.infno, env.msgid)
                    replies[idx] = self._refusal(env.msgid, now, Refused(
                        E_SCHEMA, f"the hub could not check this request ({type(e).__name__}); it was logged"))
                    break
        if rnd.pending:
            self._run_round(rnd, replies)
        assert all(r is not None for r in replies)
        return replies  # type: ignore[return-value]

    def _dispatch(self, idx: int, env, codec: Codec, now: str, rnd: "Round") -> Reply | None:
        """Answer now (a reply), or join the round (None: the round answers later)."""
        infno = env.infno
        if not isinstance(infno, str):
            raise Refused(E_SCHEMA, "infno")
        cred = self._cred
        if cred is OPERATOR:  # the admin listener's request: an operator's filing, nothing else
            if infno != INFNO_LONG_FILING:
                raise Refused(E_FORBIDDEN, f"infno {infno} is not the operator's")
            return self._filing(env, codec, now, rnd)
        if infno == INFNO_LONG_FILING:
            raise Refused(E_UNSUPPORTED, f"infno {infno}: the operator's, on the admin listener only")
        if cred is not None:  # section 10: scope, then sign-in, before anything of section 7
            self.signins.gate(cred, env, infno, now, self.inst)
        if infno in SETTLE_INFNOS:
            rnd.add(self._prepare(idx, env, codec, now, rnd))
            return None
        if infno in STEP_INFNOS:
            return self._step(idx, env, codec, now, rnd)
        if infno in REVERSE_INFNOS:
            return self._reverse(env, codec, now, rnd)
        if infno in FILING_INFNOS:
            return self._filing(env, codec, now, rnd)
        if infno == INFNO_PERSON:
            return self._ok(env.msgid, now, self._person_info(env, codec, now, rnd))
        if infno in reconcile.RECONCILE_INFNOS:
            # It must see every settlement before it: one of its institution's in the open round closes it.
            if rnd.msgids and any(p.commit and p.env.fixmedins_code == env.fixmedins_code for p in rnd.pending):
                raise Flush()
            return self._ok(env.msgid, now, reconcile.answer(infno, env, codec, self.inst, self.recon))
        if infno == INFNO_SIGN_IN:
            return self._ok(env.msgid, now, self.signins.sign_in(cred, env, codec, now, self.inst))
        if infno == INFNO_SIGN_OUT:
            return self._ok(env.msgid, now, self.signins.sign_out(cred, env, codec, now))
        raise Refused(E_UNSUPPORTED, f"infno {infno}")

    # ------------------------------------------------------------ section 12

    def _maintenance_check(self, insuplc: str, now: str) -> None:
        """E_MAINTENANCE while a window covering the person's insured region is in force (after
        E_MISMATCH, before E_NO_POLICY: docs/contract.md's choices). Outside every window's span, two
        string comparisons."""
        m = self.maintenance
        if m is not None and m.begin_min <= now < m.end_max:
            m.check(insuplc, now)

    def _count_maintenance(self, r) -> None:
        """A refusal answered: counted by the admdvs of the window that made it (the metrics read it)."""
        admdvs = r.window.admdvs
        self.maintenance_refused[admdvs] = self.maintenance_refused.get(admdvs, 0) + 1

    # ------------------------------------------------------------ replies

    @staticmethod
    def _ok(msgid: object, now: str, output: dict) -> Reply:
        return Reply(0, msgid if isinstance(msgid, str) else "", now, now, "", None, output)

    @staticmethod
    def _refusal(msgid: object, now: str, r: Refused) -> Reply:
        return Reply(
            -1, msgid if isinstance(msgid, str) else "", now, now,
            r.detail or ERR_MESSAGES.get(r.code, r.code), r.code, {},
        )

    def _journal_check(self, env, infno: str, codec: Codec) -> tuple:
        """Section 7 idempotency: a committed msgid answers with its first reply.

        Returns what the journal keeps of this request's input: its raw bytes and
        codec. They are compared in canonical form only when a msgid comes back,
        so the common path never re-encodes an input.
        """
        msgid = env.msgid
        if not isinstance(msgid, str) or not msgid:
            raise Refused(E_SCHEMA, "msgid")
        hit = self.journal.get(msgid)
        if hit is None and (self.step_journal.get(msgid) is not None or msgid in self.visits.voided):
            # A step-wise transaction's msgid (section 11), or one a 2601 voided before it arrived.
            raise Refused(E_MSGID_REUSED if msgid not in self.visits.voided else E_VOIDED, f"msgid {msgid}")
        if hit is not None:
            h_infno, h_codec, h_raw, h_reply, h_code = hit
            # Section 7 (v2): another institution's msgid is never answered with its reply.
            if h_infno == infno and h_code == env.fixmedins_code:
                if h_codec.fmt == codec.fmt and h_raw == bytes(env.input):
                    raise Journaled(h_reply)  # the same bytes: the same input (the usual retry)
                mine = codec.canonical_input(env.input)
                if mine is not None and mine == h_codec.canonical_input(msgspec.Raw(h_raw)):
                    raise Journaled(h_reply)
            raise Refused(E_MSGID_REUSED, f"msgid {msgid}")
        return codec, bytes(env.input)

    # ------------------------------------------------------------ settlements

    def _prepare(self, idx: int, env, codec: Codec, now: str, rnd: "Round") -> Pending:
        """Checks of section 7 up to the lines; the result joins the round.

        The fee lines are read into the round's FeeBuffer first (straight from the
        wire when they have the common shape, else decoded by msgspec), and taken
        back if the request does not join the round.
        """
        buf = rnd.lines
        mark = buf.n
        try:
            p = self._prepare_checks(idx, env, codec, now, rnd, buf)
            p.auth = journal_auth(self._cred, env)
            return p
        except BaseException:
            buf.truncate(mark)
            raise

    @staticmethod
    def _read_input(env, codec: Codec, buf) -> tuple:
        """The settlement's input and its fee line count; the lines go into the round's FeeBuffer."""
        try:
            inp = codec.settle_raw.decode(env.input)
            n_lines = buf.parse(inp.feedetail, codec.is_json)
        except DecodeError:
            n_lines = -1
        if n_lines < 0:
            # Not the common shape: msgspec decodes it all, and defines every error.
            try:
                inp = codec.settle.decode(env.input)
            except DecodeError as e:
                raise Refused(E_SCHEMA, f"input: {e}") from None
            fee = inp.feedetail
            n_lines = len(fee) if fee else 0
            if n_lines:
                buf.gather(fee)
        return inp, n_lines

    @staticmethod
    def _schema_fields(env, d, infno: str, outpatient: bool) -> int:
        """Section 7's E_SCHEMA for the settlement's own fields; medfee_sumamt in fen."""
        for k, v in zip(_SETTLE_STR_FIELDS, (env.mdtrtarea_admvs, env.insuplc_admdvs, env.fixmedins_code, env.msgid,
                                             d.psn_no, d.mdtrt_id, d.med_type, d.insutype)):
            if not isinstance(v, str) or not v:
                raise Refused(E_SCHEMA, f"{k} must be a non-empty string")
        if d.med_type not in (MED_TYPES_OUTPATIENT if outpatient else MED_TYPES_INPATIENT):
            raise Refused(E_SCHEMA, f"med_type {d.med_type} is not taken by {infno}")
        try:
            medfee = kernels.parse_fen(d.medfee_sumamt)
        except ValueError as e:
            raise Refused(E_SCHEMA, f"medfee_sumamt: {e}") from None
        if d.acct_used_flag not in ("0", "1"):
            raise Refused(E_SCHEMA, "acct_used_flag must be 0 or 1")
        return medfee

    @staticmethod
    def _settlement_day(d, outpatient: bool) -> int:
        """The settlement day D of section 4 (E_SCHEMA when malformed or outside 2000-2099, section 7 v2)."""
        try:
            day = kernels.parse_time_day(d.begntime)
            if not REQUEST_DAY_MIN <= day <= REQUEST_DAY_MAX:
                raise ValueError(f"{d.begntime} is outside {REQUEST_YEAR_MIN}-{REQUEST_YEAR_MAX}")
            if not outpatient:
                day = kernels.parse_time_day(d.endtime)
                if not REQUEST_DAY_MIN <= day <= REQUEST_DAY_MAX:
                    raise ValueError(f"{d.endtime} is outside {REQUEST_YEAR_MIN}-{REQUEST_YEAR_MAX}")
        except ValueError as e:
            raise Refused(E_SCHEMA, f"begntime/endtime: {e}") from None
        return day

    def _prepare_checks(self, idx: int, env, codec: Codec, now: str, rnd: "Round", buf) -> Pending:
        infno = env.infno
        outpatient = infno in OUTPATIENT_INFNOS
        commit = infno in COMMIT_INFNOS
        msgid = env.msgid
        inp_c = None
        if commit:
            if isinstance(msgid, str) and msgid in rnd.msgids:
                raise Flush()
            inp_c = self._journal_check(env, infno, codec)
        inp, n_lines = self._read_input(env, codec, buf)
        d = inp.data
        step_err = step = claims = interim = None
        if inp.feedetail is None:  # section 11: the visit's lines of a batch
            d, n_lines, step_err, step, claims, interim = self._step_settle_input(env, codec, buf, rnd)
        medfee = self._schema_fields(env, d, infno, outpatient)
        day = self._settlement_day(d, outpatient)
        med_type = d.med_type
        chronic = med_type == MED_TYPE_CHRONIC
        if chronic and (not isinstance(d.dise_codg, str) or not d.dise_codg):
            raise Refused(E_SCHEMA, "dise_codg must be a non-empty string")
        if interim is not None:
            raise interim
        if not n_lines and step_err is None and step is None:
            raise Refused(E_SCHEMA, "feedetail must be a non-empty list")
        visit = (env.fixmedins_code, d.mdtrt_id)
        if visit in rnd.visits:
            raise Flush()

        p = Pending(idx, env, d, n_lines, commit, outpatient, now, journal_input=inp_c)
        p.medfee = medfee
        p.prov = self._province(env.mdtrtarea_admvs)
        p.step, p.claims = step, claims
        p.future = day > self._clock_day(now)
        # From here on a failing check is remembered, not raised: an E_SCHEMA in
        # the lines (found by the kernel later) still ranks before it.
        try:
            if n_lines > LINES_MAX:
                raise Refused(E_LIMIT, f"more than {LINES_MAX} fee lines")
            inst = self.inst.get(env.fixmedins_code)
            if inst is None:
                raise Refused(E_UNKNOWN_INSTITUTION)
            if inst[0] != env.mdtrtarea_admvs:
                raise Refused(E_FORBIDDEN, "the institution is not in mdtrtarea_admvs")
            psn = self.psn_index.get(d.psn_no)
            if psn is None:
                raise Refused(E_UNKNOWN_PERSON)
            insuplc, insutype = self.psn_insuplc[psn], self.psn_insutype[psn]
            if env.insuplc_admdvs != insuplc or d.insutype != insutype:
                raise Refused(E_MISMATCH, "insuplc_admdvs or insutype")
            if self.maintenance is not None:
                self._maintenance_check(insuplc, now)
            pol = self.pol.ids.get((insuplc, insutype))
            if pol is None:
                raise Refused(E_NO_POLICY)
            if step_err is not None:
                raise step_err
            if step is None and visit in self.open_visits:
                raise Refused(E_DUPLICATE_VISIT)
        except Refused as r:
            p.err = r
            rnd.visits.add(visit)
            return p
        policy = self.policies[pol]
        cls = self._filing_class(psn, insuplc, env.mdtrtarea_admvs, day, med_type, policy)
        red = 0 if cls in (LOCAL, WAIVED) else policy.reduction_bp[REDUCTION_KEY_OF_CLASS[cls]]
        p.pre_status = 0
        if red is None:
            p.pre_status, red = 1, 0
        if chronic:
            p.kind = ACC_CHRONIC
            p.cd_slot = self.cd_slots.get((psn, d.dise_codg), -1)
            p.cd_pol = self.pol.chronic.get((pol, d.dise_codg), -1)
            if p.pre_status == 0 and (p.cd_slot < 0 or p.cd_pol < 0):
                p.pre_status = 2
        else:
            p.kind = ACC_OUTPATIENT if outpatient else ACC_INPATIENT
        p.psn, p.pol, p.lv, p.cls, p.reduction_bp = psn, pol, inst[1], cls, red
        p.year = money.day_year(day)
        p.retired310 = int(insutype == "310" and self.psn_retired[psn])
        p.acct_ok = int(insutype == "310" and d.acct_used_flag == "1")
        rnd.visits.add(visit)
        rnd.persons.add(psn)
        if step is not None:
            rnd.step_visits.add(d.mdtrt_id)
        if commit:
            rnd.msgids.add(msgid)
        return p

    @staticmethod
    def _province(admvs: str) -> int:
        """The treatment province of a region code, as the catalogue keys it; -1 when it is none."""
        return int(admvs[:2]) if admvs[:2].isdigit() else -1

    def _request_time_ok(self, text: str) -> bool:
        """A time of a request: YYYY-MM-DD HH:MM:SS within the years section 7 (v2) allows."""
        return REQUEST_DAY_MIN <= self._clock_day(text) <= REQUEST_DAY_MAX

    def _clock_day(self, now: str) -> int:
        """The day of the hub's clock (replay: the request's inf_time) for the future-date rule,
        REQUEST_DAY_MAX + 1 for a text that is not a time (replay refuses such an inf_time first).
        The last answer is kept: a batch's requests mostly share their clock text.
        """
        if now != self._clock_text:
            try:
                self._clock_value = kernels.parse_time_day(now)
            except ValueError:
                self._clock_value = REQUEST_DAY_MAX + 1  # not a time: no clock bars a day by it
            self._clock_text = now
        return self._clock_value

    def _filing_class(self, psn: int, insuplc: str, t: str, day: int, med_type: str, policy) -> str:
        """Section 4: the candidate class with the smallest reduction."""
        if t == insuplc:
            return LOCAL
        cands = set()
        fil_row, fil_dest, fil_begn, fil_last = self.fil_row, self.fil_dest, self.fil_begn, self.fil_last
        for k in range(self.fil_start[psn], self.fil_start[psn + 1]):
            f = fil_row[k]
            if fil_begn[f] <= day <= fil_last[f] and region_covers(fil_dest[f], t):
                cands.add(self.fil_cls[f])
        online = self.filings_online.by_psn
        if online and psn in online:
            for f in online[psn]:
                if not f.cancelled and f.begn <= day <= f.last and region_covers(f.dest, t):
                    cands.add(f.cls)
        if med_type in MED_TYPES_EMERGENCY:
            cands.add(EMERGENCY)
        if med_type in MED_TYPES_OUTPATIENT and not policy.op_requires_filing:
            cands.add(WAIVED)
        if not cands:
            return UNFILED
        best, best_red = None, None
        for c in CANDIDATE_ORDER:
            if c in cands:
                r = 0 if c == WAIVED else policy.reduction_bp[REDUCTION_KEY_OF_CLASS[c]]
                if best is None or r < best_red:
                    best, best_red = c, r
        return best

    # ------------------------------------------------------------ 1101

    def _person_info(self, env, codec: Codec, now: str, rnd: "Round") -> dict:
        try:
            d = codec.person.decode(env.input).data
        except DecodeError as e:
            raise Refused(E_SCHEMA, f"input: {e}") from None
        kind, no = d.mdtrt_cert_type, d.mdtrt_cert_no
        for v in (kind, no):
            if not isinstance(v, str) or not v:
                raise Refused(E_SCHEMA, "mdtrt_cert_type and mdtrt_cert_no must be non-empty strings")
        if kind == "01":
            i = self.psn_index.get(no)
        elif kind in ("02", "03"):
            i = self.by_certno.get(no)
        else:
            raise Refused(E_SCHEMA, "mdtrt_cert_type must be 01, 02 or 03")
        if i is None:
            raise Refused(E_UNKNOWN_PERSON)
        if self.maintenance is not None:
            self._maintenance_check(self.psn_insuplc[i], now)
        if i in rnd.persons:
            raise Flush()  # its balance may change in the open round
        w = self.world
        return {
            "baseinfo": {"psn_no": self.psn_no[i], "certno": self.psn_certno[i], "psn_name": self.psn_name[i]},
            "insuinfo": [{
                "insutype": self.psn_insutype[i], "psn_type": self.psn_type[i],
                "balc": _fmt(int(self.state.balc_fen[i])), "insuplc_admdvs": self.psn_insuplc[i],
            }],
            "filinginfo": [{
                "filing_type": w.fil_type[f], "dest_admdvs": w.fil_dest[f],
                "begndate": money.format_day(int(w.fil_begn[f])),
                "enddate": None if int(w.fil_end[f]) == DAY_OPEN else money.format_day(int(w.fil_end[f])),
                "status": w.fil_status[f],
            } for f in (int(self.fil_row[k]) for k in range(self.fil_start[i], self.fil_start[i + 1]))] + [{
                "filing_type": f.filing_type, "dest_admdvs": f.dest, "begndate": money.format_day(f.begn),
                "enddate": None if f.end == DAY_OPEN else money.format_day(f.end), "status": f.status,
            } for f in self.filings_online.in_force(i)],
        }


class _Lazy:
    """A string column read from Arrow one cell at a time (rarely read: 1101 only)."""

    __slots__ = ("a",)

    def __init__(self, a):
        self.a = a

    def __getitem__(self, i) -> str:
        return self.a[int(i)].as_py()


def _cells(a: np.ndarray) -> array.array:
    """An integer numpy array as an int64 array.array (cells read as plain ints)."""
    out = array.array("q")
    out.frombytes(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return out


def _encoded_list(a) -> list[str]:
    """A low-cardinality string column (regions, insurance types) as a list sharing one str per value."""
    enc = pc.dictionary_encode(a)
    values = np.array(enc.dictionary.to_pylist(), dtype=object)
    return values[enc.indices.to_numpy(zero_copy_only=False)].tolist()




from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
