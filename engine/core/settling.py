"""Computing and committing settlements: a round through the kernels, the replies, reversals (section 7).

A mixin of engine.core.engine.Engine: these methods read and change the engine's
state (its person arrays, journal, settled map) exactly as the rest of it does;
they live here so that each module holds one concern.
"""
from __future__ import annotations

import numpy as np

from engine.contract.protocol import (
    CLR_TYPE_INPATIENT, CLR_TYPE_OUTPATIENT, E_ALREADY_REVERSED, E_AMOUNT_MISMATCH, E_DATE, E_FILING_REQUIRED,
    E_FORBIDDEN, E_LIMIT, E_MAINTENANCE, E_MISMATCH, E_NO_QUALIFICATION, E_NOT_FOUND, E_SCHEMA, FUND_ACCOUNT,
    FUND_BASIC, FUND_NAMES, FUND_SECOND, OUTPATIENT_INFNOS, REQUEST_DAY_MAX, REQUEST_DAY_MIN, Refused,
)
from engine.contract.wire import Codec, DecodeError, Reply
from engine.core import kernels
from engine.core.records import (
    ACC_INPATIENT, ACC_OUTPATIENT, CHANGE_REVERSE, CHANGE_SETTLE, Change, Pending, ResultRows, Settled,
)
from engine.core.round import Flush, Round, RoundArrays
from engine.core.signin import journal_auth

I8, I16, I32, I64, U8 = np.int8, np.int16, np.int32, np.int64, np.uint8
_fmt = kernels.format_fen

_SPLIT_ERR = {1: E_LIMIT, 2: E_AMOUNT_MISMATCH}
_FUND_ERR = {1: E_FILING_REQUIRED, 2: E_NO_QUALIFICATION, 3: E_DATE}
_ZERO_FUNDS = ("cvlserv_pay", "hifes_pay", "maf_pay", "oth_pay", "hosp_part_amt")


def _column_bytes(ln) -> tuple[bytes, bytes, bytes, bytes]:
    """The round's amt_fen, cnt and pric_micro (little-endian int64) and day (int32) columns as bytes: an
    upload's effect takes its lines' slices of them (engine.core.visits), one conversion a round."""
    return (ln.amt_fen.astype("<i8", copy=False).tobytes(), ln.cnt_ten_thousandths.astype("<i8", copy=False).tobytes(),
            ln.pric_micro.astype("<i8", copy=False).tobytes(), ln.day.astype("<i4", copy=False).tobytes())


class SettlingMixin:
    """The engine's round, settlement replies and reversals (see the module docstring)."""

    def _run_round(self, rnd: "Round", replies: list) -> None:
        """Compute every pending settlement of a round through the kernels, in order."""
        pend = rnd.pending
        n = len(pend)
        counts = np.fromiter((p.n_lines for p in pend), dtype=I64, count=n)
        starts = np.zeros(n + 1, I64)
        np.cumsum(counts, out=starts[1:])
        buf = rnd.lines
        assert int(starts[-1]) == buf.n, "every pending settlement's lines, and only theirs, are in the round"
        lines = kernels.Lines(buf.codes, buf.sns, *buf.arrays(), buf.n_bad)
        prov = np.fromiter((p.prov for p in pend), dtype=I16, count=n)
        line_prov = np.repeat(prov, counts)
        row = self.cat.match(lines.codes, line_prov, lines.day)
        # An upload keeps its lines' codes (the visit's columns); the replies keep the round's
        # arrays, not its strings.
        codes = lines.codes if any(p.upload is not None for p in pend) else None
        lines.codes = None
        outpatient = np.fromiter((p.outpatient for p in pend), dtype=U8, count=n)
        split = kernels.split_lines(self.cat, starts, outpatient, row, lines)
        # A line dated outside the years a request may name is malformed (section 7, v2).
        bad = lines.bad.astype(I64)
        bad |= (lines.day < REQUEST_DAY_MIN) | (lines.day > REQUEST_DAY_MAX)
        # Per request; a step-wise settlement refused before its lines has none (reduceat would misread it).
        csum = np.zeros(len(bad) + 1, I64)
        np.cumsum(bad, out=csum[1:])
        bad_lines = csum[starts[1:]] - csum[starts[:-1]]
        arrays = RoundArrays(self.cat, starts, lines, row, split)

        ok, ok_k = self._refuse_before_funds(pend, bad_lines, split, replies, arrays, codes)
        if not ok:
            return
        sel = np.array(ok_k, dtype=I64)
        m = len(ok)

        def col(attr: str, dtype) -> np.ndarray:
            return np.fromiter((getattr(p, attr) for p in ok), dtype=dtype, count=m)

        s = {
            "kind": col("kind", I8), "pol": col("pol", I32), "lv": col("lv", I8),
            "psn": col("psn", I32), "year": col("year", I32),
            "inscp_fen": np.ascontiguousarray(split.tot_inscp_fen[sel]), "medfee_fen": col("medfee", I64),
            "reduction_bp": col("reduction_bp", I32), "retired310": col("retired310", U8),
            "acct_ok": col("acct_ok", U8), "cd_slot": col("cd_slot", I32), "cd_pol": col("cd_pol", I32),
            "pre_status": col("pre_status", I8), "commit": col("commit", U8),
        }
        pay = kernels.pay_funds(self.pol, self.state, s)
        # setlinfo's money, formatted for the whole round in one call: the columns
        # of SETLINFO_FEN (hifmi_pay and hifob_pay: the second layer by insurance type).
        second = pay.second_pay_fen
        insutype_of = self.psn_insutype
        insutypes = [insutype_of[p.psn] for p in ok]
        is390 = np.fromiter((t == "390" for t in insutypes), dtype=np.bool_, count=m)
        is310 = np.fromiter((t == "310" for t in insutypes), dtype=np.bool_, count=m)
        fen = np.stack([
            s["medfee_fen"], split.tot_fulamt_fen[sel], split.tot_overlmt_fen[sel], split.tot_presel_fen[sel], s["inscp_fen"],
            pay.act_pay_dedc, pay.hifp_pay, np.where(is390, second, 0), np.where(is310, second, 0),
            pay.fund_pay_sumamt, pay.psn_part_amt, pay.acct_pay, pay.psn_cash_pay, pay.balc_after_fen,
        ], axis=1).astype(I64, copy=False)
        texts = kernels.format_fen_rows(np.ascontiguousarray(fen))
        # Per settlement, the kernels' outputs as one tuple of Python ints (a row
        # of .tolist() columns: no numpy scalar is made per field).
        outs = zip(
            pay.status.tolist(), fen.tolist(), second.tolist(), pay.burden_fen.tolist(), pay.pool_prop_bp.tolist(),
            starts[sel].tolist(), texts,
        )
        for p, out in zip(ok, outs):
            st = out[0]
            if st:
                replies[p.idx] = self._refusal(p.env.msgid, p.now, Refused(_FUND_ERR[st]))
                continue
            replies[p.idx] = self._settlement_reply(p, out, arrays)

    def _refuse_before_funds(self, pend: list, bad_lines: np.ndarray, split, replies: list, arrays,
                             codes: list | None) -> tuple[list, list]:
        """Answer the errors that rank before the fund payment, in the order of section 7, and the
        uploads of the round (section 11: all or nothing); the settlements that pass, and their places."""
        ok: list[Pending] = []
        ok_k: list[int] = []
        starts = arrays.starts.tolist()
        columns = None  # the round's line columns as bytes, made for its first upload that commits
        for k, p, n_bad, split_err, tot_amt in zip(
            range(len(pend)), pend, bad_lines.tolist(), split.err.tolist(), split.tot_amt_fen.tolist()
        ):
            err = None
            if n_bad:
                err = E_SCHEMA
            elif p.err is not None:
                err = p.err
            elif split_err:
                err = _SPLIT_ERR[split_err]
            elif p.upload is not None:
                lo = starts[k]
                if columns is None:
                    columns = _column_bytes(arrays.lines)
                replies[p.idx] = self._finish_upload(p, lo, arrays, codes[lo:lo + p.n_lines], columns)
                continue
            elif tot_amt != p.medfee or (p.claims is not None and self._claims_differ(p.claims, split, k)):
                err = E_AMOUNT_MISMATCH
            elif p.future:
                err = E_DATE  # section 7 (v2): a bill dated after the hub's clock day
            if err is not None:
                if not isinstance(err, Refused):  # a code found here; p.err is the Refused of a check
                    err = Refused(err)
                elif err.code == E_MAINTENANCE:
                    self._count_maintenance(err)
                replies[p.idx] = self._refusal(p.env.msgid, p.now, err)
            else:
                ok.append(p)
                ok_k.append(k)
        return ok, ok_k

    @staticmethod
    def _claims_differ(claims: list, split, k: int) -> bool:
        """Section 11: a split total the hospital sent that is not the hub's."""
        hub = (int(split.tot_fulamt_fen[k]), int(split.tot_overlmt_fen[k]), int(split.tot_presel_fen[k]),
               int(split.tot_inscp_fen[k]))
        return any(c is not None and c != h for c, h in zip(claims, hub))

    def _settlement_reply(self, p: Pending, out: tuple, arrays) -> Reply:
        _, a, second, burden, prop_bp, lo, f = out
        # a and f: the 13 amounts of AMOUNT_KEYS then balc, as int fen and as text.
        insutype = self.psn_insutype[p.psn]
        d = p.data
        mdtrt_id, psn_no, med_type = d.mdtrt_id, d.psn_no, d.med_type
        pool_prop = kernels.format_scaled(prop_bp, 4)
        clr_type = CLR_TYPE_OUTPATIENT if p.outpatient else CLR_TYPE_INPATIENT
        # The key order is SETLINFO_KEYS (engine.store.codec journals setlinfo as values).
        setlinfo = {
            "medfee_sumamt": f[0], "fulamt_ownpay_amt": f[1], "overlmt_selfpay": f[2], "preselfpay_amt": f[3],
            "inscp_scp_amt": f[4], "act_pay_dedc": f[5], "hifp_pay": f[6], "hifmi_pay": f[7], "hifob_pay": f[8],
            "fund_pay_sumamt": f[9], "psn_part_amt": f[10], "acct_pay": f[11], "psn_cash_pay": f[12],
            "balc": f[13], "cvlserv_pay": "0.00", "hifes_pay": "0.00", "maf_pay": "0.00", "oth_pay": "0.00",
            "hosp_part_amt": "0.00",
            "pool_prop_selfpay": pool_prop, "filing_class": p.cls, "mdtrt_id": mdtrt_id, "psn_no": psn_no,
            "insutype": insutype, "med_type": med_type, "clr_type": clr_type,
            "setl_time": p.now,
        }
        hifp, acct = a[6], a[11]
        detail = []
        if hifp:
            fund_type = FUND_BASIC[insutype]
            detail.append({"fund_pay_type": fund_type, "fund_pay_type_name": FUND_NAMES[fund_type],
                           "fund_payamt": f[6]})
        if second:
            fund_type = FUND_SECOND[insutype]
            detail.append({"fund_pay_type": fund_type, "fund_pay_type_name": FUND_NAMES[fund_type],
                           "fund_payamt": _fmt(second)})
        if acct:
            detail.append({"fund_pay_type": FUND_ACCOUNT, "fund_pay_type_name": FUND_NAMES[FUND_ACCOUNT],
                           "fund_payamt": f[11]})
        output = {"setlinfo": setlinfo, "setldetail": detail, "result": ResultRows(lo, lo + p.n_lines, arrays)}
        reply = self._ok(p.env.msgid, p.now, output)
        if p.commit:
            env = p.env
            msgid = env.msgid
            setl_id = "S" + msgid
            setlinfo["setl_id"] = setl_id
            amounts = {
                "medfee_sumamt": a[0], "fulamt_ownpay_amt": a[1], "overlmt_selfpay": a[2], "preselfpay_amt": a[3],
                "inscp_scp_amt": a[4], "act_pay_dedc": a[5], "hifp_pay": hifp, "hifmi_pay": a[7], "hifob_pay": a[8],
                "fund_pay_sumamt": a[9], "psn_part_amt": a[10], "acct_pay": acct, "psn_cash_pay": a[12],
            }
            info = {
                "pool_prop_selfpay": pool_prop, "filing_class": p.cls, "mdtrt_id": mdtrt_id, "psn_no": psn_no,
                "insutype": insutype, "med_type": med_type, "clr_type": clr_type,
            }
            insuplc = self.psn_insuplc[p.psn]
            rec = Settled(
                setl_id, p.outpatient, env.fixmedins_code, env.mdtrtarea_admvs, insuplc, mdtrt_id, p.psn, psn_no,
                p.kind, p.cd_slot,
                # The year of the settlement day: the person's accounting year right
                # after this settlement (an earlier year was refused with E_DATE; a
                # later one rolled the accumulators over). Not state.acc_year, which
                # a later settlement of the same round may have moved on.
                p.year, amounts, burden, second, info, batch=None if p.step is None else p.step[1],
            )
            self.settled[setl_id] = rec
            if p.step is None:
                self.open_visits.add((env.fixmedins_code, mdtrt_id))
            else:  # section 11: the batch (the stay) is settled; a visit's other batches still may be
                v, batch = p.step
                self._visit_effect(["settle", v.mdtrt_id, batch, setl_id], v.mdtrt_id, env, p.now)
            codec, raw = p.journal_input
            self.journal[msgid] = (env.infno, codec, raw, reply, env.fixmedins_code)
            change = Change(CHANGE_SETTLE, msgid, env.infno, env.fixmedins_code, env.mdtrtarea_admvs, insuplc, setl_id,
                            p.now, codec, raw, reply, rec, p.auth)
            self.changes.append(change)
            self.recon.add(change)
            if self.on_change is not None:
                self.on_change(change)
        return reply

    # ------------------------------------------------------------ reversal

    def _reverse(self, env, codec: Codec, now: str, rnd: "Round") -> Reply:
        infno = env.infno
        if isinstance(env.msgid, str) and env.msgid in rnd.msgids:
            raise Flush()
        inp_c = self._journal_check(env, infno, codec)
        try:
            d = codec.reverse.decode(env.input).data
        except DecodeError as e:
            raise Refused(E_SCHEMA, f"input: {e}") from None
        if not isinstance(env.fixmedins_code, str) or not env.fixmedins_code:
            raise Refused(E_SCHEMA, "fixmedins_code must be a non-empty string")
        for k in ("setl_id", "mdtrt_id", "psn_no"):
            v = getattr(d, k)
            if not isinstance(v, str) or not v:
                raise Refused(E_SCHEMA, f"{k} must be a non-empty string")
        if d.setl_id[1:] in rnd.msgids:
            raise Flush()  # it reverses a settlement of the open round
        rec = self.settled.get(d.setl_id)
        if rec is None:
            raise Refused(E_NOT_FOUND, f"settlement {d.setl_id}")
        if rec.psn in rnd.persons:
            raise Flush()  # the open round settles for the same person
        if rec.fixmedins_code != env.fixmedins_code:
            raise Refused(E_FORBIDDEN, "only the institution that settled may reverse")
        if rec.reversed:
            raise Refused(E_ALREADY_REVERSED)
        if (infno in OUTPATIENT_INFNOS) != rec.outpatient or rec.mdtrt_id != d.mdtrt_id or rec.psn_no != d.psn_no:
            raise Refused(E_MISMATCH, "infno, mdtrt_id or psn_no differ from the settlement")
        return self._reverse_settled(rec, env, infno, inp_c, now)

    def _reverse_settled(self, rec: Settled, env, infno: str, inp_c: tuple, now: str) -> Reply:
        """Commit the reversal of `rec` made by the request `env` (a 2208/2305, or a 2601 undoing a
        settlement: `infno` is then the reversal's of that settlement's kind)."""
        st, i, a = self.state, rec.psn, rec.amounts
        self._committing = True  # from here on the reversal changes state
        st.balc_fen[i] += a["acct_pay"]
        if int(st.acc_year[i]) == rec.year:
            if rec.kind == ACC_INPATIENT:
                st.hifp_ip_fen[i] -= a["hifp_pay"]
                st.burden2_fen[i] -= rec.burden
                st.second_paid_fen[i] -= rec.second
            elif rec.kind == ACC_OUTPATIENT:
                st.ded_op_fen[i] -= a["act_pay_dedc"]
                st.hifp_op_fen[i] -= a["hifp_pay"]
            else:
                st.cd_val_fen[rec.cd_slot] -= a["hifp_pay"]
        rec.reversed = True
        if rec.batch is None:
            self.open_visits.discard((rec.fixmedins_code, rec.mdtrt_id))
        setlinfo = {k: _fmt(-v) for k, v in a.items()}
        setlinfo["balc"] = _fmt(int(st.balc_fen[i]))
        for z in _ZERO_FUNDS:
            setlinfo[z] = "0.00"
        setlinfo.update(rec.info)
        setlinfo["setl_time"] = now
        setlinfo["setl_id"] = "S" + env.msgid
        reply = self._ok(env.msgid, now, {"setlinfo": setlinfo})
        self.journal[env.msgid] = (infno, *inp_c, reply, env.fixmedins_code)
        self.changes.append(Change(
            CHANGE_REVERSE, env.msgid, infno, env.fixmedins_code, env.mdtrtarea_admvs if isinstance(env.mdtrtarea_admvs, str) else "",
            self.psn_insuplc[rec.psn], setlinfo["setl_id"], now, *inp_c, reply, rec, journal_auth(self._cred, env),
        ))
        self.recon.add(self.changes[-1])
        if self.on_change is not None:
            self.on_change(self.changes[-1])
        visit = self.visits.setl_batch.get(rec.setl_id)
        if visit is not None:  # section 11: its batch (stay) is unsettled again, its lines in force
            self._visit_effect(["unsettle", rec.setl_id], visit[0], env, now)
        self._committing = False
        return reply


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
