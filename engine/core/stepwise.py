"""The step-wise flow (docs/contract.md section 11): visits, fee uploads, discharge, 2601 冲正.

A mixin of engine.core.engine.Engine. Each transaction here checks everything
first and changes nothing until it commits (`_step_commit`): then its effects
(engine.core.visits) are applied to the VisitBook, its reply is journaled by
msgid in the step journal, and a StepChange carries both to the store. An upload
(2204, 2301) joins the round like a settlement, so that its lines are split by
the same kernel call as the round's settlements (engine.core.settling), and
commits there once every line has passed. A step-wise settlement (2206, 2207,
2303, 2304 without `feedetail`) is the section-7 settlement of the visit's
lines in force of that batch: its lines are put in the round's FeeBuffer and
the one-shot path computes it (engine.core.engine._prepare_checks).
"""
from __future__ import annotations

import msgspec

from engine.contract.protocol import (
    E_ALREADY_REVERSED, E_DATE, E_DUPLICATE_LINE, E_DUPLICATE_VISIT, E_FORBIDDEN, E_LIMIT, E_MISMATCH,
    E_MSGID_REUSED, E_NO_POLICY, E_NOT_FOUND, E_SCHEMA, E_STATE, E_UNKNOWN_INSTITUTION, E_UNKNOWN_PERSON,
    E_UNSUPPORTED, E_VOIDED, INFNO_IP_ADMIT, INFNO_IP_CANCEL, INFNO_IP_CHANGE, INFNO_IP_DISCHARGE,
    INFNO_IP_REVOKE, INFNO_IP_UNDISCHARGE, INFNO_IP_UPLOAD, INFNO_OP_CANCEL, INFNO_OP_INFO, INFNO_OP_REGISTER,
    INFNO_OP_REVOKE, INFNO_OP_UPLOAD, INFNO_UNDO, MED_TYPE_CHRONIC, MED_TYPES_INPATIENT, MED_TYPES_OUTPATIENT,
    REQUEST_DAY_MAX, REQUEST_DAY_MIN, UNDOABLE_INFNOS, Refused, required_text,
)
from engine.contract.wire import Codec, DecodeError, Reply
from engine.core import kernels
from engine.core.records import Pending, ResultRows, StepChange
from engine.core.round import Flush, Journaled, Round
from engine.core.signin import journal_auth
from engine.core.visits import INPATIENT_BATCH, Visit

VISIT_LINES_IN_FORCE_MAX = 10_000  # section 11
ALL_LINES = "0000"  # 2205's chrg_bchno and 2302's feedetl_sn: every line not settled


_text = required_text


def _time(d: dict, k: str, required: bool = True) -> str | None:
    """A time YYYY-MM-DD HH:MM:SS within the years a request may name (section 7, v2)."""
    v = _text(d, k, required)
    if v is None:
        return None
    try:
        day = kernels.parse_time_day(v)
    except ValueError as e:
        raise Refused(E_SCHEMA, f"{k}: {e}") from None
    if not REQUEST_DAY_MIN <= day <= REQUEST_DAY_MAX:
        raise Refused(E_SCHEMA, f"{k}: {v} is outside 2000-2099")
    return v


class StepwiseMixin:
    """The step-wise transactions of section 11 (see the module docstring)."""

    # ------------------------------------------------------------ dispatch and journal

    def _step(self, idx: int, env, codec: Codec, now: str, rnd: Round) -> Reply | None:
        """A transaction of section 11 other than a settlement: its reply, or None when it joined the round."""
        infno = env.infno
        if isinstance(env.msgid, str) and env.msgid in rnd.msgids:
            raise Flush()
        inp_c = self._step_journal_check(env, infno, codec)
        if not isinstance(env.fixmedins_code, str) or not env.fixmedins_code:
            raise Refused(E_SCHEMA, "fixmedins_code must be a non-empty string")
        if infno == INFNO_OP_UPLOAD or infno == INFNO_IP_UPLOAD:
            rnd.add(self._upload_prepare(idx, env, codec, now, rnd, inp_c))
            return None
        inp = self._step_input(env, codec)
        if infno == INFNO_OP_REGISTER or infno == INFNO_IP_ADMIT:
            output, effects = self._open_visit(env, inp, infno == INFNO_OP_REGISTER, now, rnd)
        elif infno == INFNO_UNDO:
            output, effects = self._undo(env, inp, codec, now, rnd, inp_c)
        else:
            output, effects = self._visit_change(env, infno, inp, rnd)
        mdtrt_id = effects[0][1] if effects and effects[0][0] != "void" else ""
        return self._step_commit(env, infno, now, inp_c, output, effects, mdtrt_id)

    def _step_journal_check(self, env, infno: str, codec: Codec) -> tuple:
        """Section 11's idempotency (as section 7's): the stored reply, E_MSGID_REUSED or E_VOIDED."""
        msgid = env.msgid
        if not isinstance(msgid, str) or not msgid:
            raise Refused(E_SCHEMA, "msgid")
        hit = self.step_journal.get(msgid)
        if hit is None:
            if msgid in self.visits.voided:
                raise Refused(E_VOIDED, f"msgid {msgid} was voided by a 2601 before it arrived")
            if self.journal.get(msgid) is not None:
                raise Refused(E_MSGID_REUSED, f"msgid {msgid}")
            return codec, bytes(env.input)
        h_infno, h_codec, h_raw, h_reply, h_code = hit
        if h_infno == infno and h_code == env.fixmedins_code:
            if h_codec.fmt == codec.fmt and h_raw == bytes(env.input):
                raise Journaled(h_reply)
            mine = codec.canonical_input(env.input)
            if mine is not None and mine == h_codec.canonical_input(msgspec.Raw(h_raw)):
                raise Journaled(h_reply)
        raise Refused(E_MSGID_REUSED, f"msgid {msgid}")

    @staticmethod
    def _step_input(env, codec: Codec) -> dict:
        try:
            inp = codec.generic.decode(env.input)
        except DecodeError as e:
            raise Refused(E_SCHEMA, f"input: {e}") from None
        if not isinstance(inp, dict):
            raise Refused(E_SCHEMA, "input must be an object")
        return inp

    def _step_commit(self, env, infno: str, now: str, inp_c: tuple, output: dict, effects: list,
                     mdtrt_id: str = "") -> Reply:
        """Commit a step-wise transaction: apply its effects, journal its reply, hand both to the store."""
        reply = self._ok(env.msgid, now, output)
        self._committing = True
        for e in effects:
            self.apply_effect(e)
        codec, raw = inp_c
        self.step_journal[env.msgid] = (infno, codec, raw, reply, env.fixmedins_code)
        self._step_change(env.msgid, infno, env.fixmedins_code, mdtrt_id, now, codec, raw, reply, effects,
                          journal_auth(self._cred, env))
        self._committing = False
        return reply

    def _step_change(self, msgid, infno, code, mdtrt_id, now, codec, raw, reply, effects, auth) -> None:
        if self.step_changes is not None:
            self.step_changes.append(StepChange(msgid, infno, code, mdtrt_id, now, codec, raw, reply, effects, auth))

    def _visit_effect(self, effect: list, mdtrt_id: str, env, now: str) -> None:
        """A visit effect of a transaction of section 7 (a settlement, a reversal): applied and kept, with no
        reply of its own in the step journal (the settlement journal holds the transaction)."""
        self.visits.apply(effect)
        self._step_change("", env.infno, env.fixmedins_code, mdtrt_id, now, None, b"", None, [effect],
                          journal_auth(self._cred, env))

    # ------------------------------------------------------------ the visit a request names

    def _visit(self, env, d: dict, rnd: Round, outpatient: bool | None = None) -> Visit:
        """The visit `d` names, checked in section 11's order: E_NOT_FOUND, E_FORBIDDEN, E_MISMATCH; and
        of the kind the infno takes (E_STATE otherwise)."""
        mdtrt_id = _text(d, "mdtrt_id")
        psn_no = _text(d, "psn_no")
        if mdtrt_id in rnd.step_visits:
            raise Flush()
        v = self.visits.visits.get(mdtrt_id)
        if v is None:
            raise Refused(E_NOT_FOUND, f"no visit {mdtrt_id}")
        if v.fixmedins_code != env.fixmedins_code:
            raise Refused(E_FORBIDDEN, "the visit belongs to another institution")
        if v.psn_no != psn_no:
            raise Refused(E_MISMATCH, "psn_no is not the visit's")
        if outpatient is not None and v.outpatient != outpatient:
            raise Refused(E_STATE, f"{mdtrt_id} is an {'outpatient visit' if v.outpatient else 'inpatient stay'}")
        return v

    @staticmethod
    def _state(v: Visit, *allowed: str) -> None:
        if v.state not in allowed:
            raise Refused(E_STATE, f"the visit is {v.state}")

    # ------------------------------------------------------------ 2201, 2401

    def _open_visit(self, env, inp: dict, outpatient: bool, now: str, rnd: Round) -> tuple[dict, list]:
        d = inp.get("data" if outpatient else "mdtrtinfo")
        if not isinstance(d, dict):
            raise Refused(E_SCHEMA, "input.data" if outpatient else "input.mdtrtinfo")
        psn_no = _text(d, "psn_no")
        insutype = _text(d, "insutype")
        begntime = _time(d, "begntime")
        otp_key = "ipt_otp_no" if outpatient else "ipt_no"
        otp_no = d.get(otp_key) or ""
        if not isinstance(otp_no, str):
            raise Refused(E_SCHEMA, f"{otp_key} must be a string")
        med_type, dise = "11", ""
        if not outpatient:
            med_type = _text(d, "med_type")
            if med_type not in MED_TYPES_INPATIENT:
                raise Refused(E_SCHEMA, f"med_type {med_type} is not taken by 2401")
            dise = d.get("dise_codg") or ""
            if not isinstance(dise, str):
                raise Refused(E_SCHEMA, "dise_codg must be a string")
        for k in ("mdtrtarea_admvs", "insuplc_admdvs"):
            if not isinstance(getattr(env, k), str) or not getattr(env, k):
                raise Refused(E_SCHEMA, f"{k} must be a non-empty string")
        code = env.fixmedins_code
        self._parties(env, psn_no, insutype, now)
        book = self.visits
        if outpatient:
            if otp_no and (code, otp_no) in book.otp_open:
                raise Refused(E_DUPLICATE_VISIT, f"ipt_otp_no {otp_no} is visit {book.otp_open[(code, otp_no)]}")
        else:
            stays = book.stays_open.get(psn_no)
            if stays:
                if stays & rnd.step_visits:
                    raise Flush()
                raise Refused(E_DUPLICATE_VISIT, f"the person has a stay not settled: {min(stays)}")
        mdtrt_id = "M" + env.msgid
        effect = ["open", mdtrt_id, code, env.mdtrtarea_admvs, psn_no, insutype, int(outpatient), med_type, dise,
                  begntime, otp_no]
        if outpatient:
            return {"data": {"mdtrt_id": mdtrt_id, "psn_no": psn_no, "ipt_otp_no": otp_no}}, [effect]
        return {"result": {"mdtrt_id": mdtrt_id}}, [effect]

    def _parties(self, env, psn_no: str, insutype: str, now: str | None) -> int:
        """Section 7's institution, person and policy checks, in its order, with section 12's window
        between the person and the policy (as a settlement's; None for `now`: a transaction no window
        holds back, a filing's); the person's row."""
        inst = self.inst.get(env.fixmedins_code)
        if inst is None:
            raise Refused(E_UNKNOWN_INSTITUTION)
        if inst[0] != env.mdtrtarea_admvs:
            raise Refused(E_FORBIDDEN, "the institution is not in mdtrtarea_admvs")
        psn = self.psn_index.get(psn_no)
        if psn is None:
            raise Refused(E_UNKNOWN_PERSON)
        insuplc = self.psn_insuplc[psn]
        if env.insuplc_admdvs != insuplc or insutype != self.psn_insutype[psn]:
            raise Refused(E_MISMATCH, "insuplc_admdvs or insutype")
        if self.maintenance is not None and now is not None:
            self._maintenance_check(insuplc, now)
        if self.pol.ids.get((insuplc, insutype)) is None:
            raise Refused(E_NO_POLICY)
        return psn

    # ------------------------------------------------------------ 2202, 2203, 2205, 2302, 2402-2405

    def _visit_change(self, env, infno: str, inp: dict, rnd: Round) -> tuple[dict, list]:
        if infno == INFNO_OP_INFO or infno == INFNO_IP_CHANGE:
            outpatient = infno == INFNO_OP_INFO
            d = inp.get("mdtrtinfo" if outpatient else "adminfo")
            if not isinstance(d, dict):
                raise Refused(E_SCHEMA, "input.mdtrtinfo" if outpatient else "input.adminfo")
            med_type = _text(d, "med_type", required=outpatient)
            if med_type is not None and med_type not in (MED_TYPES_OUTPATIENT if outpatient else MED_TYPES_INPATIENT):
                raise Refused(E_SCHEMA, f"med_type {med_type} is not taken by {infno}")
            begntime = _time(d, "begntime", required=False)
            dise = d.get("dise_codg")
            if dise is not None and not isinstance(dise, str):
                raise Refused(E_SCHEMA, "dise_codg must be a string")
            if med_type == MED_TYPE_CHRONIC and not dise:
                raise Refused(E_SCHEMA, "dise_codg must name the disease of med_type 14")
            v = self._visit(env, d, rnd, outpatient)
            self._state(v, "registered", "admitted", "discharged")
            if begntime is not None and v.endtime is not None and begntime > v.endtime:
                raise Refused(E_DATE, f"begntime {begntime} is after the discharge's endtime {v.endtime}")
            return {}, [["info", v.mdtrt_id, med_type, dise, begntime]]
        if infno == INFNO_IP_REVOKE:
            return self._revoke_lines(env, inp, rnd)
        d = inp.get("dscginfo" if infno == INFNO_IP_DISCHARGE else "data")
        if not isinstance(d, dict):
            raise Refused(E_SCHEMA, "input.dscginfo" if infno == INFNO_IP_DISCHARGE else "input.data")
        if infno == INFNO_IP_DISCHARGE:
            endtime = _time(d, "endtime")
            v = self._visit(env, d, rnd, outpatient=False)
            self._state(v, "admitted", "discharged")
            if endtime < v.begntime:
                raise Refused(E_DATE, f"endtime {endtime} is before begntime {v.begntime}")
            return {}, [["discharge", v.mdtrt_id, endtime, env.msgid]]
        if infno == INFNO_OP_REVOKE:
            batch = _text(d, "chrg_bchno")
            v = self._visit(env, d, rnd, outpatient=True)
            self._state(v, "registered", "settled")
            ls = v.lines
            if batch == ALL_LINES:
                pos = [i for i in ls.positions() if ls.batch[i] not in v.settled]
            else:
                if batch in v.settled:
                    raise Refused(E_STATE, f"batch {batch} is settled")
                pos = ls.positions(batch=batch)
                if not pos:
                    raise Refused(E_NOT_FOUND, f"no line in force in batch {batch}")
            return {}, [["revoke", v.mdtrt_id, pos]] if pos else []
        outpatient = infno == INFNO_OP_CANCEL
        v = self._visit(env, d, rnd, outpatient)
        if infno == INFNO_IP_UNDISCHARGE:
            self._state(v, "discharged")
            return {}, [["undischarge", v.mdtrt_id]]
        assert infno in (INFNO_OP_CANCEL, INFNO_IP_CANCEL)
        self._state(v, "registered") if outpatient else self._state(v, "admitted", "discharged")
        return {}, [["cancel", v.mdtrt_id]]

    def _revoke_lines(self, env, inp: dict, rnd: Round) -> tuple[dict, list]:
        """2302: named lines of a stay, or every line not settled."""
        rows = inp.get("data")
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise Refused(E_SCHEMA, "input.data must be a non-empty list of objects")
        ids = {(_text(r, "mdtrt_id"), _text(r, "psn_no")) for r in rows}
        if len(ids) != 1:
            raise Refused(E_SCHEMA, "one 2302 revokes lines of one stay")
        sns = [_text(r, "feedetl_sn") for r in rows]
        v = self._visit(env, rows[0], rnd, outpatient=False)
        self._state(v, "admitted", "discharged")
        ls = v.lines
        if ALL_LINES in sns:
            pos = ls.positions()
        else:
            pos = []
            for sn in dict.fromkeys(sns):
                i = ls.sn_pos.get(sn)
                if i is None or ls.revoked[i]:
                    raise Refused(E_NOT_FOUND, f"no line in force with feedetl_sn {sn}")
                pos.append(i)
        return {}, [["revoke", v.mdtrt_id, pos]] if pos else []

    # ------------------------------------------------------------ 2204, 2301

    def _upload_prepare(self, idx: int, env, codec: Codec, now: str, rnd: Round, inp_c: tuple) -> Pending:
        """Checks of an upload before its lines; it joins the round (its lines split with the round's).

        Its lines may be read into the round's FeeBuffer before the checks (_upload_lines), and are
        taken back if it does not join the round.
        """
        buf = rnd.lines
        mark = buf.n
        try:
            return self._upload_checks(idx, env, codec, now, rnd, inp_c, buf)
        except BaseException:
            buf.truncate(mark)
            raise

    @staticmethod
    def _upload_lines(env, codec: Codec, buf) -> tuple[list, bool]:
        """An upload's fee lines, and whether they are in the round's FeeBuffer already.

        In the common shape they are read straight from the wire (FeeBuffer.parse), and decoded only
        for the fields the checks read (wire.UploadLineIds): a msgspec decode of the whole could then
        fail on nothing, so the checks answer as after it. Otherwise msgspec decodes them all and
        defines every error, and they are gathered once the checks pass.
        """
        try:
            raw = codec.upload_raw.decode(env.input).feedetail
            lines = codec.upload_ids.decode(raw)
        except DecodeError:
            lines = None
        if lines:
            mark = buf.n
            if buf.parse(raw, codec.is_json) == len(lines):
                return lines, True
            buf.truncate(mark)
        try:
            return codec.upload.decode(env.input).feedetail, False
        except DecodeError as e:
            raise Refused(E_SCHEMA, f"input: {e}") from None

    def _upload_checks(self, idx: int, env, codec: Codec, now: str, rnd: Round, inp_c: tuple, buf) -> Pending:
        outpatient = env.infno == INFNO_OP_UPLOAD
        lines, read = self._upload_lines(env, codec, buf)
        if not lines:
            raise Refused(E_SCHEMA, "feedetail must be a non-empty list")
        first = lines[0]
        for k, v0 in zip(("mdtrt_id", "psn_no", "chrg_bchno"), (first.mdtrt_id, first.psn_no, first.chrg_bchno)):
            if (outpatient or k != "chrg_bchno") and (not isinstance(v0, str) or not v0):
                raise Refused(E_SCHEMA, f"feedetail: {k} must be a non-empty string")
        # One pass over the lines: the visit, person and batch each names, and its feedetl_sn.
        mdtrt_id, psn_no, chrg_bchno = first.mdtrt_id, first.psn_no, first.chrg_bchno if outpatient else None
        sns = []
        one_visit, sn_ok = True, True
        for ln in lines:
            if ln.mdtrt_id != mdtrt_id or ln.psn_no != psn_no or (outpatient and ln.chrg_bchno != chrg_bchno):
                one_visit = False
            sn = ln.feedetl_sn
            if type(sn) is not str or not sn:
                sn_ok = False
            sns.append(sn)
        if not one_visit:
            raise Refused(E_SCHEMA, f"one upload names one visit{', one person and one batch' if outpatient else ''}")
        if not sn_ok:
            raise Refused(E_SCHEMA, "feedetail: feedetl_sn must be a non-empty string")
        if ALL_LINES in sns or (outpatient and first.chrg_bchno == ALL_LINES):
            raise Refused(E_SCHEMA, f"{ALL_LINES} names every line in a revocation: no line or batch is called so")
        v = self._visit(env, {"mdtrt_id": first.mdtrt_id, "psn_no": first.psn_no}, rnd, outpatient)
        batch = first.chrg_bchno if outpatient else INPATIENT_BATCH
        if outpatient:
            self._state(v, "registered", "settled")
            if batch in v.settled:
                raise Refused(E_STATE, f"batch {batch} is settled")
        else:
            self._state(v, "admitted", "discharged")
        seen = v.lines.sn_pos
        mine = set(sns)
        # The keys' view walks the smaller of the two (a stay's lines may be thousands).
        if len(mine) != len(sns) or not seen.keys().isdisjoint(mine):
            dup = next(sn for k, sn in enumerate(sns) if sn in seen or sn in sns[:k])
            raise Refused(E_DUPLICATE_LINE, f"feedetl_sn {dup}")
        if v.lines.in_force + len(lines) > VISIT_LINES_IN_FORCE_MAX:
            raise Refused(E_LIMIT, f"more than {VISIT_LINES_IN_FORCE_MAX} lines in force for the visit")
        p = Pending(idx, env, None, len(lines), True, v.outpatient, now, journal_input=inp_c)
        p.upload = (v, batch)
        p.prov = self._province(v.mdtrtarea_admvs)
        p.auth = journal_auth(self._cred, env)
        if not read:
            buf.gather(lines)
        rnd.step_visits.add(v.mdtrt_id)
        rnd.msgids.add(env.msgid)
        return p

    def _finish_upload(self, p: Pending, lo: int, arrays, codes: list, columns: tuple) -> Reply:
        """An upload whose every line passed: commit its lines to the visit; the reply's result rows are
        the round's (the fields of a settlement's result). `columns`: the round's amt_fen, cnt, pric_micro
        and day columns as bytes (engine.core.settling._column_bytes)."""
        v, batch = p.upload
        hi = lo + p.n_lines
        amt, cnt, pric, day = columns
        # The columns as their bytes (engine.core.visits): no Python int per line, here or in the store.
        effect = ["upload", v.mdtrt_id, batch, p.env.msgid, codes, arrays.lines.sns[lo:hi],
                  amt[8 * lo:8 * hi], cnt[8 * lo:8 * hi], pric[8 * lo:8 * hi], day[4 * lo:4 * hi]]
        env = p.env
        reply = self._ok(env.msgid, p.now, {"result": ResultRows(lo, hi, arrays)})
        self._committing = True
        self.visits.apply(effect)
        codec, raw = p.journal_input
        self.step_journal[env.msgid] = (env.infno, codec, raw, reply, env.fixmedins_code)
        self._step_change(env.msgid, env.infno, env.fixmedins_code, v.mdtrt_id, p.now, codec, raw, reply, [effect],
                          p.auth)
        self._committing = False
        return reply

    # ------------------------------------------------------------ 2601

    def _undo(self, env, inp: dict, codec: Codec, now: str, rnd: Round, inp_c: tuple) -> tuple[dict, list]:
        """2601: undo a committed transaction through its own undo, or void a msgid never committed."""
        d = inp.get("data")
        if not isinstance(d, dict):
            raise Refused(E_SCHEMA, "input.data")
        psn_no = _text(d, "psn_no")
        omsgid = _text(d, "omsgid")
        oinfno = _text(d, "oinfno")
        if oinfno not in UNDOABLE_INFNOS:
            raise Refused(E_SCHEMA, f"oinfno {oinfno}: 2601 undoes {', '.join(sorted(UNDOABLE_INFNOS))}")
        if omsgid in rnd.msgids:
            raise Flush()  # its original is in the open round
        out = {"data": {"omsgid": omsgid, "oinfno": oinfno, "status": "UNDONE"}}
        book = self.visits
        hit = self.step_journal.get(omsgid)
        if hit is None:
            hit = self.journal.get(omsgid)
        if hit is None:
            if omsgid in book.voided:
                raise Refused(E_ALREADY_REVERSED, f"msgid {omsgid} is already voided")
            out["data"]["status"] = "VOIDED"
            return out, [["void", omsgid, oinfno, env.fixmedins_code]]
        h_infno, h_code = hit[0], hit[4]
        if h_code != env.fixmedins_code:
            raise Refused(E_FORBIDDEN, f"msgid {omsgid} was committed by another institution")
        if h_infno != oinfno:
            raise Refused(E_MISMATCH, f"msgid {omsgid} was committed as {h_infno}")
        if oinfno in ("2207", "2304"):
            rec = self.settled.get("S" + omsgid)
            assert rec is not None, f"committed settlement {omsgid} has no record"
            if rec.psn_no != psn_no:
                raise Refused(E_MISMATCH, "psn_no is not the settlement's")
            if rec.psn in rnd.persons:
                raise Flush()
            if rec.reversed:
                raise Refused(E_ALREADY_REVERSED)
            self._reverse_settled(rec, env, "2208" if rec.outpatient else "2305", inp_c, now)
            return out, []
        mdtrt_id = "M" + omsgid if oinfno in ("2201", "2401") else book.by_msgid.get(omsgid)
        v = book.visits.get(mdtrt_id) if mdtrt_id is not None else None
        assert v is not None, f"committed {oinfno} {omsgid} has no visit"
        if v.psn_no != psn_no:
            raise Refused(E_MISMATCH, "psn_no is not the visit's")
        if mdtrt_id in rnd.step_visits:
            raise Flush()
        if oinfno in ("2201", "2401"):
            if v.cancelled:
                raise Refused(E_ALREADY_REVERSED, f"visit {mdtrt_id} is already cancelled")
            self._state(v, "registered") if v.outpatient else self._state(v, "admitted", "discharged")
            return out, [["cancel", mdtrt_id]]
        if oinfno == "2402":
            if v.discharged_by != omsgid:
                raise Refused(E_ALREADY_REVERSED, "that discharge is not in force")
            self._state(v, "discharged")
            return out, [["undischarge", mdtrt_id]]
        pos = v.lines.positions(upload=omsgid)  # 2204, 2301
        if not pos:
            raise Refused(E_ALREADY_REVERSED, "none of that upload's lines is in force")
        if v.cancelled or any(v.lines.batch[i] in v.settled for i in pos):
            raise Refused(E_STATE, f"the visit is {v.state}" if v.cancelled else "lines of that upload are settled")
        return out, [["revoke", mdtrt_id, pos]]

    # ------------------------------------------------------------ 2206, 2207, 2303, 2304 without feedetail

    def _step_settle_input(self, env, codec: Codec, buf, rnd: Round) -> tuple:
        """The data of a step-wise settlement as the one-shot path reads it, and the visit's error to
        answer after E_NO_POLICY (section 11's order) or None.

        The visit's lines in force of the batch go into the round's FeeBuffer; begntime,
        endtime, med_type and dise_codg are the visit's.
        """
        try:
            d = codec.step_settle.decode(env.input).data
        except DecodeError as e:
            raise Refused(E_SCHEMA, f"input: {e}") from None
        outpatient = env.infno in ("2206", "2207")
        for k in ("psn_no", "mdtrt_id", "insutype"):
            if not isinstance(getattr(d, k), str) or not getattr(d, k):
                raise Refused(E_SCHEMA, f"{k} must be a non-empty string")
        if outpatient and (not isinstance(d.chrg_bchno, str) or not d.chrg_bchno):
            raise Refused(E_SCHEMA, "chrg_bchno must be a non-empty string")
        if d.med_type is not None and (not isinstance(d.med_type, str)
                                       or d.med_type not in (MED_TYPES_OUTPATIENT if outpatient else MED_TYPES_INPATIENT)):
            raise Refused(E_SCHEMA, f"med_type {d.med_type} is not taken by {env.infno}")
        interim = None  # answered once the request is otherwise well formed (engine._prepare_checks)
        if not outpatient and not (d.mid_setl_flag is None or d.mid_setl_flag == "" or d.mid_setl_flag == "0"):
            if d.mid_setl_flag != "1":
                raise Refused(E_SCHEMA, "mid_setl_flag must be 0 or 1")
            interim = Refused(E_UNSUPPORTED, "interim settlement (mid_setl_flag 1) is not supported")
        claims = []
        for k in ("fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt"):
            val = getattr(d, k)
            if val is None:
                claims.append(None)
                continue
            try:
                claims.append(kernels.parse_fen(val))
            except ValueError as e:
                raise Refused(E_SCHEMA, f"{k}: {e}") from None
        if d.mdtrt_id in rnd.step_visits:
            raise Flush()
        err, v, batch = None, self.visits.visits.get(d.mdtrt_id), d.chrg_bchno if outpatient else INPATIENT_BATCH
        n_lines = 0
        if v is None:
            err = Refused(E_NOT_FOUND, f"no visit {d.mdtrt_id}")
        elif v.fixmedins_code != env.fixmedins_code:
            err = Refused(E_FORBIDDEN, "the visit belongs to another institution")
        elif v.psn_no != d.psn_no or (d.med_type is not None and d.med_type != v.med_type):
            err = Refused(E_MISMATCH, "psn_no or med_type is not the visit's")
        elif v.outpatient != outpatient:
            err = Refused(E_STATE, f"{d.mdtrt_id} is an {'outpatient visit' if v.outpatient else 'inpatient stay'}")
        elif v.cancelled or batch in v.settled or (not outpatient and v.endtime is None):
            err = Refused(E_STATE, f"the visit is {v.state}" if v.cancelled or not outpatient else
                          f"batch {batch} is settled")
        else:
            pos = v.lines.positions(batch=batch)
            if not pos:
                err = Refused(E_NOT_FOUND, "no line in force" + (f" in batch {batch}" if outpatient else ""))
            else:
                buf.extend(*v.lines.columns(pos))
                n_lines = len(pos)
        data = _SettleView(d, v if err is None else None, outpatient)
        return data, n_lines, err, (v, batch) if err is None else None, claims, interim


class _SettleView:
    """A step-wise settlement's data with the visit's times, med_type and dise_codg: what the one-shot
    path reads (wire.SettleData's fields). Without a visit (an error to answer later), fields that
    pass the schema checks, which the visit's error then outranks."""

    __slots__ = ("psn_no", "mdtrt_id", "med_type", "insutype", "medfee_sumamt", "acct_used_flag", "begntime",
                 "endtime", "dise_codg")

    def __init__(self, d, v: Visit | None, outpatient: bool):
        self.psn_no, self.mdtrt_id, self.insutype = d.psn_no, d.mdtrt_id, d.insutype
        self.medfee_sumamt, self.acct_used_flag = d.medfee_sumamt, d.acct_used_flag
        if v is not None:
            self.med_type, self.dise_codg = v.med_type, v.dise_codg or None
            self.begntime, self.endtime = v.begntime, v.endtime
        else:
            self.med_type = "11" if outpatient else "21"
            self.dise_codg = None
            self.begntime = self.endtime = "2000-01-01 00:00:00"


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
