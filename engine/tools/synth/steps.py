"""The requests of each step of a visit (docs/contract.md sections 7 and 11): walks the steps that
engine.tools.synth.flows planned, keeps what the hub will hold of each visit (its mdtrt_id, its lines in
force by batch, its settlements), and makes the envelopes with their Notes, the one-shot twin of each
step-wise settlement, the requests wrong on purpose, and the retries.
"""
from __future__ import annotations

import orjson

from engine.contract import money
from engine.tools.synth.flows import ANOMALY_EXPECT, FALLBACK_ANOMALY, STEP_ANOMALIES, U_CLAIMS, UNCERTAIN, Flow, Note

CLAIMS_SHARE = 0.8  # step-wise settlements that send the four split totals
QUERY_UNKNOWN_SHARE = 0.03
ALL_LINES = "0000"
# One-shot anomalies that a step-wise visit gets as a one-shot request of its lines (a fresh mdtrt_id).
_TWIN_FORM = frozenset({"line_amount", "line_limit", "no_qualification", "late_date"})
DEPARTMENTS = (("A03", "内科"), ("A04", "外科"), ("A05", "妇产科"), ("A07", "儿科"), ("A10", "眼科"),
               ("A11", "耳鼻咽喉科"), ("A50", "中医科"))
EMERGENCY_DEPARTMENT = ("A20", "急诊医学科")
# Steps whose request the hub commits when it succeeds, and which a hospital retries after a timeout.
_RETRIABLE = frozenset({"register", "info", "upload", "settle", "reverse", "revoke", "cancel", "undo", "void",
                        "discharge", "undischarge", "change"})


def envelopes(flow: Flow, stream, n_retry: int) -> list[tuple[dict, Note]]:
    """Every envelope of the planned stream with its Note, in the order a replay feeds them.

    stream: an engine.tools.synth.stream._Stream over the flow's visits (envelopes, msgids, one-shot
    anomalies).
    """
    b = Builder(flow, stream)
    for i in flow.order:
        b.visit(i, flow.plans[i])
    b.retries(n_retry)
    stream.events.sort(key=lambda e: (e[0], e[1], e[2]))
    assert len(stream.events) == flow.n, (len(stream.events), flow.n)
    return [(e[3], e[4]) for e in stream.events]


class _Line:
    """A line of a step-wise visit as the hub holds it."""

    __slots__ = ("pos", "sn", "batch", "upload", "in_force")

    def __init__(self, pos: int, sn: str, batch: str, upload: str):
        self.pos, self.sn, self.batch, self.upload, self.in_force = pos, sn, batch, upload, True


class _Visit:
    """The state of a visit while its envelopes are built: what the hub will hold."""

    def __init__(self, i: int, stepwise: bool):
        self.i, self.stepwise = i, stepwise
        self.mdtrt_id = ""
        self.otp_no = ""
        self.register_msgid = ""
        self.info_msgid = ""
        self.lines: list[_Line] = []
        self.uploads: list[tuple[str, list[_Line]]] = []
        self.next_sn = 0
        self.settled: dict[str, tuple[dict, dict | None]] = {}  # batch -> (envelope, twin) in force
        self.last_settle: tuple[dict, dict | None, str] | None = None
        self.first_settle: tuple[dict, dict | None] | None = None
        self.undone_upload: list[_Line] = []
        self.discharge_msgid = ""
        self.revoked: list[_Line] = []  # the lines the last 2205 revoked
        self.reserved: str | None = None  # the msgid a 2601 voided, for the original sent late
        self.reversal: dict | None = None


class Builder:
    """Walks each visit's planned steps and makes their envelopes (section 7 and section 11)."""

    def __init__(self, flow: Flow, s):
        self.f, self.s = flow, s
        self.v, self.rng, self.vis = flow.v, flow.rng, flow.vis
        self.committed: list[tuple[int, dict, Note]] = []
        self.last_mdtrt_id = ""

    def add(self, t: int, env: dict, note: Note, phase: int = 2) -> None:
        self.s.events.append((t, phase, len(self.s.events), env, note))
        if note.expect is None and note.step in _RETRIABLE:
            self.committed.append((t, env, note))

    # ------------------------------------------------------------ one visit

    def visit(self, i: int, steps: list[list]) -> None:
        f = self.f
        st = _Visit(i, f.stepwise[i])
        st.next_sn = int(self.vis.facts.lines.nl[i]) + 1
        t_prev = -(1 << 62)
        for kind, t_want, arg in steps:
            t = max(int(t_want), t_prev + 1)
            t_prev = t
            getattr(self, "_" + kind)(st, t, arg)
        if st.mdtrt_id:
            self.last_mdtrt_id = st.mdtrt_id

    def _env(self, st: _Visit, infno: str, t: int, inp: dict, msgid: str | None = None) -> dict:
        i = st.i
        return self.s.envelope(infno, self.s.inst_vis[i], self.vis.insuplc[i], t, inp, msgid=msgid)

    def _note(self, st: _Visit, step: str, expect: str | None, twin: dict | None = None,
              anomaly: str | None = None) -> Note:
        return Note(st.i, step, expect, twin, anomaly, st.stepwise)

    def _query(self, st: _Visit, t: int, _arg) -> None:
        i, vis = st.i, self.vis
        d = vis.data[i]
        data = {"mdtrt_cert_type": d["mdtrt_cert_type"], "mdtrt_cert_no": d["mdtrt_cert_no"]}
        expect = None
        if self.rng.random() < QUERY_UNKNOWN_SHARE:
            data = {"mdtrt_cert_type": "02", "mdtrt_cert_no": f"{vis.insuplc[i]}19000101999X"}
            expect = "E_UNKNOWN_PERSON"
        env = self._env(st, "1101", t, {"data": data})
        self.add(t, env, self._note(st, "query", expect, twin=env))

    # ------------------------------------------------------------ one-shot visits

    def _os_pre(self, st: _Visit, t: int, _arg) -> None:
        i, vis = st.i, self.vis
        inp = {"data": dict(vis.data[i]), "feedetail": [dict(ln) for ln in vis.feedetail[i]]}
        env = self._env(st, "2303" if vis.ip[i] else "2206", t, inp)
        self.add(t, env, self._note(st, "presettle", self.f.fc[i], twin=env))

    def _os_settle(self, st: _Visit, t: int, _arg) -> None:
        i, vis = st.i, self.vis
        env = self._env(st, "2304" if vis.ip[i] else "2207", t, {"data": vis.data[i], "feedetail": vis.feedetail[i]})
        self.add(t, env, self._note(st, "settle", self.f.fc[i], twin=env))
        st.last_settle = (env, env, "")
        st.first_settle = (env, env)

    def _os_reverse(self, st: _Visit, t: int, _arg) -> None:
        senv = st.last_settle[0]
        env = self._reversal(st, senv, t)
        st.reversal = env
        self.add(t, env, self._note(st, "reverse", None, twin=env))

    def _os_resettle(self, st: _Visit, t: int, _arg) -> None:
        senv = st.last_settle[0]
        inp = {"data": dict(senv["input"]["data"]), "feedetail": [dict(ln) for ln in senv["input"]["feedetail"]]}
        if len(inp["feedetail"]) > 1:
            inp["feedetail"].pop()
            total = sum(money.parse_fen(ln["det_item_fee_sumamt"]) for ln in inp["feedetail"])
            inp["data"]["medfee_sumamt"] = money.format_fen(total)
        env = self._env(st, senv["infno"], t, inp)
        self.add(t, env, self._note(st, "settle", self.f.fc[st.i], twin=env))
        st.last_settle = (env, env, "")

    def _reversal(self, st: _Visit, senv: dict, t: int, inst: int | None = None, infno: str | None = None,
                  mdtrt_id: str | None = None, setl_id: str | None = None) -> dict:
        """The reversal (section 7) of settlement `senv`; the arguments given replace its own (anomalies)."""
        i, vis = st.i, self.vis
        d = senv["input"]["data"]
        return self.s.envelope(
            infno or ("2305" if vis.ip[i] else "2208"), self.s.inst_vis[i] if inst is None else inst,
            vis.insuplc[i], t,
            {"data": {"setl_id": setl_id or "S" + senv["msgid"], "mdtrt_id": mdtrt_id or d["mdtrt_id"],
                      "psn_no": d["psn_no"]}},
        )

    # ------------------------------------------------------------ step-wise: visits

    def _dept(self, st: _Visit) -> tuple[str, str]:
        mt = int(self.vis.facts.mt[st.i])
        return EMERGENCY_DEPARTMENT if mt in (13, 24) else DEPARTMENTS[st.i % len(DEPARTMENTS)]

    def _doctor(self, st: _Visit) -> tuple[str, str]:
        k = 1 + st.i % 40
        return f"D{self.s.inst_vis[st.i]:05d}{k:02d}", f"医师{k:02d}"

    def _register_env(self, st: _Visit, t: int, msgid: str | None = None) -> dict:
        i, vis = st.i, self.vis
        d = vis.data[i]
        msgid = msgid or self.s.msgid_for(self.s.inst_vis[i], t)
        dept, dept_name = self._dept(st)
        dr, dr_name = self._doctor(st)
        if vis.ip[i]:
            inp = {"mdtrtinfo": {
                "psn_no": d["psn_no"], "insutype": d["insutype"], "begntime": d["begntime"],
                "mdtrt_cert_type": d["mdtrt_cert_type"], "mdtrt_cert_no": d["mdtrt_cert_no"],
                "med_type": d["med_type"], "ipt_no": "IPT" + msgid, "medrcdno": "MR" + msgid[-10:],
                "atddr_no": dr, "chfpdr_name": dr_name, "adm_dept_codg": dept, "adm_dept_name": dept_name,
                "adm_bed": f"{1 + i % 60:02d}", "dise_codg": "", "dise_name": ""},
                "diseinfo": []}
            return self._env(st, "2401", t, inp, msgid=msgid)
        inp = {"data": {
            "psn_no": d["psn_no"], "insutype": d["insutype"], "begntime": d["begntime"],
            "mdtrt_cert_type": d["mdtrt_cert_type"], "mdtrt_cert_no": d["mdtrt_cert_no"], "ipt_otp_no": "OTP" + msgid,
            "atddr_no": dr, "dr_name": dr_name, "dept_code": dept, "dept_name": dept_name, "caty": dept}}
        return self._env(st, "2201", t, inp, msgid=msgid)

    def _register(self, st: _Visit, t: int, _arg) -> None:
        env = self._register_env(st, t)
        expect = "E_NO_POLICY" if self.f.fc[st.i] == "E_NO_POLICY" else None
        self.add(t, env, self._note(st, "register", expect))
        st.register_msgid = env["msgid"]
        st.mdtrt_id = "M" + env["msgid"]
        st.otp_no = "OTP" + env["msgid"] if not self.vis.ip[st.i] else ""

    def _undo(self, st: _Visit, t: int, omsgid: str, oinfno: str, step: str, expect: str | None = None,
              anomaly: str | None = None) -> dict:
        env = self._env(st, "2601", t, {"data": {"psn_no": self.vis.data[st.i]["psn_no"], "omsgid": omsgid,
                                                 "oinfno": oinfno}})
        self.add(t, env, self._note(st, step, expect, anomaly=anomaly))
        return env

    def _undo_register(self, st: _Visit, t: int, _arg) -> None:
        self._undo(st, t, st.register_msgid, "2401" if self.vis.ip[st.i] else "2201", "undo")
        st.mdtrt_id = st.register_msgid = ""

    def _info(self, st: _Visit, t: int, _arg) -> None:
        d = self.vis.data[st.i]
        info = {"mdtrt_id": st.mdtrt_id, "psn_no": d["psn_no"], "med_type": d["med_type"], "begntime": d["begntime"],
                "main_cond_dscr": "", "dise_name": ""}
        diseinfo = []
        if "dise_codg" in d:
            info["dise_codg"] = d["dise_codg"]
            diseinfo = [{"diag_type": "1", "diag_srt_no": "1", "diag_code": d["dise_codg"], "diag_name": "",
                         "vali_flag": "1"}]
        env = self._env(st, "2203", t, {"mdtrtinfo": info, "diseinfo": diseinfo})
        st.info_msgid = env["msgid"]
        self.add(t, env, self._note(st, "info", None))

    def _change(self, st: _Visit, t: int, _arg) -> None:
        d = self.vis.data[st.i]
        env = self._env(st, "2403", t, {"adminfo": {"mdtrt_id": st.mdtrt_id, "psn_no": d["psn_no"],
                                                    "med_type": d["med_type"], "begntime": d["begntime"],
                                                    "dise_codg": "", "dise_name": ""}})
        self.add(t, env, self._note(st, "change", None))

    def _discharge(self, st: _Visit, t: int, _arg) -> None:
        d = self.vis.data[st.i]
        dept, dept_name = self._dept(st)
        env = self._env(st, "2402", t, {"dscginfo": {
            "mdtrt_id": st.mdtrt_id, "psn_no": d["psn_no"], "insutype": d["insutype"], "endtime": d["endtime"],
            "dise_codg": "", "dise_name": "", "dscg_way": "1", "dscg_dept_codg": dept, "dscg_dept_name": dept_name},
            "diseinfo": []})
        st.discharge_msgid = env["msgid"]
        self.add(t, env, self._note(st, "discharge", None))

    def _undischarge(self, st: _Visit, t: int, _arg) -> None:
        env = self._env(st, "2405", t, {"data": {"mdtrt_id": st.mdtrt_id, "psn_no": self.vis.data[st.i]["psn_no"]}})
        self.add(t, env, self._note(st, "undischarge", None))

    def _undo_discharge(self, st: _Visit, t: int, _arg) -> None:
        self._undo(st, t, st.discharge_msgid, "2402", "undo")

    def _cancel(self, st: _Visit, t: int, _arg) -> None:
        self.add(t, self._cancel_env(st, t), self._note(st, "cancel", None))

    def _cancel_env(self, st: _Visit, t: int) -> dict:
        psn_no = self.vis.data[st.i]["psn_no"]
        if self.vis.ip[st.i]:
            return self._env(st, "2404", t, {"data": {"mdtrt_id": st.mdtrt_id, "psn_no": psn_no}})
        return self._env(st, "2202", t, {"data": {"psn_no": psn_no, "mdtrt_id": st.mdtrt_id, "ipt_otp_no": st.otp_no}})

    # ------------------------------------------------------------ step-wise: lines

    def _sn(self, st: _Visit) -> str:
        width = len(self.vis.feedetail[st.i][0]["feedetl_sn"])
        sn = f"{st.next_sn:0{width}d}"
        st.next_sn += 1
        return sn

    def _line_row(self, st: _Visit, ln: _Line) -> dict:
        """The line as a 2204/2301 row (section 11)."""
        i = st.i
        row = self.vis.feedetail[i][ln.pos]
        d = self.vis.data[i]
        dr, _ = self._doctor(st)
        dept, _ = self._dept(st)
        out = {"feedetl_sn": ln.sn, "mdtrt_id": st.mdtrt_id, "psn_no": d["psn_no"]}
        if self.vis.ip[i]:
            out["drord_no"] = f"DO{ln.sn}"
        else:
            out["chrg_bchno"] = ln.batch
            out["rxno"] = ""
            out["rx_circ_flag"] = "0"
        out.update({"fee_ocur_time": row["fee_ocur_time"], "med_list_codg": row["med_list_codg"],
                    "medins_list_codg": row["medins_list_codg"], "det_item_fee_sumamt": row["det_item_fee_sumamt"],
                    "cnt": row["cnt"], "pric": row["pric"], "bilg_dept_codg": dept, "bilg_dr_codg": dr,
                    "hosp_appr_flag": "1"})
        return out

    def _upload_env(self, st: _Visit, t: int, lines: list[_Line], msgid: str | None = None) -> dict:
        infno = "2301" if self.vis.ip[st.i] else "2204"
        return self._env(st, infno, t, {"feedetail": [self._line_row(st, ln) for ln in lines]}, msgid=msgid)

    def _commit_upload(self, st: _Visit, t: int, lines: list[_Line], msgid: str | None = None) -> None:
        env = self._upload_env(st, t, lines, msgid)
        for ln in lines:
            ln.upload = env["msgid"]
        st.lines += lines
        st.uploads.append((env["msgid"], lines))
        self.add(t, env, self._note(st, "upload", None))

    def _upload(self, st: _Visit, t: int, arg: tuple) -> None:
        batch, c0, c1 = arg
        first = self.vis.feedetail[st.i]
        lines = [_Line(p, first[p]["feedetl_sn"], batch, "") for p in range(c0, c1)]
        self._commit_upload(st, t, lines)

    def _undo_upload(self, st: _Visit, t: int, _arg) -> None:
        msgid, lines = st.uploads[-1]
        self._undo(st, t, msgid, "2301" if self.vis.ip[st.i] else "2204", "undo")
        for ln in lines:
            ln.in_force = False
        st.undone_upload = lines

    def _reupload(self, st: _Visit, t: int, _arg) -> None:
        """The lines of an undone upload again: new feedetl_sn, since a visit never takes one twice."""
        lines = [_Line(ln.pos, self._sn(st), ln.batch, "") for ln in st.undone_upload]
        self._commit_upload(st, t, lines)

    def _reupload_corrected(self, st: _Visit, t: int, arg: tuple) -> None:
        """After a reversal and a revocation: the batch's lines but its last, as a new batch."""
        old, new = arg
        assert st.revoked and all(ln.batch == old for ln in st.revoked)
        lines = [_Line(ln.pos, self._sn(st), new, "") for ln in st.revoked[:-1]]
        self._commit_upload(st, t, lines)

    def _revoke_batch(self, st: _Visit, t: int, batch: str) -> None:
        d = self.vis.data[st.i]
        env = self._env(st, "2205", t, {"data": {"mdtrt_id": st.mdtrt_id, "chrg_bchno": batch, "psn_no": d["psn_no"]}})
        st.revoked = [ln for ln in st.lines if ln.in_force and (ln.batch == batch or batch == ALL_LINES)]
        for ln in st.revoked:
            ln.in_force = False
        self.add(t, env, self._note(st, "revoke", None))

    def _revoke_last_line(self, st: _Visit, t: int, _arg) -> None:
        ln = [x for x in st.lines if x.in_force][-1]
        d = self.vis.data[st.i]
        row = {"feedetl_sn": ln.sn, "mdtrt_id": st.mdtrt_id, "psn_no": d["psn_no"]}
        env = self._env(st, "2302", t, {"data": [row]})
        ln.in_force = False
        self.add(t, env, self._note(st, "revoke", None))

    def _revoke_all(self, st: _Visit, t: int, _arg) -> None:
        if not self.vis.ip[st.i]:
            self._revoke_batch(st, t, ALL_LINES)
            return
        d = self.vis.data[st.i]
        env = self._env(st, "2302", t, {"data": [{"feedetl_sn": ALL_LINES, "mdtrt_id": st.mdtrt_id,
                                                  "psn_no": d["psn_no"]}]})
        for ln in st.lines:
            ln.in_force = False
        self.add(t, env, self._note(st, "revoke", None))

    # ------------------------------------------------------------ step-wise: settling

    def _in_force(self, st: _Visit, batch: str) -> list[_Line]:
        return [ln for ln in st.lines if ln.in_force and ln.batch == batch]

    def _settle_data(self, st: _Visit, batch: str, claims: bool) -> dict:
        """A step-wise settlement's data (section 11): the visit, its batch, the total and the split totals."""
        i, vis = st.i, self.vis
        d = vis.data[i]
        lines = self._in_force(st, batch)
        base = int(vis.facts.lines.lstart[i])
        amt = vis.facts.lines.amt_fen
        medfee_fen = sum(int(amt[base + ln.pos]) for ln in lines)
        data = {"psn_no": d["psn_no"], "mdtrt_cert_type": d["mdtrt_cert_type"], "mdtrt_cert_no": d["mdtrt_cert_no"],
                "med_type": d["med_type"], "medfee_sumamt": money.format_fen(medfee_fen), "psn_setlway": "01",
                "mdtrt_id": st.mdtrt_id}
        if not vis.ip[i]:
            data["chrg_bchno"] = batch
        data.update({"acct_used_flag": d["acct_used_flag"], "insutype": d["insutype"], "invono": ""})
        if vis.ip[i]:
            data["mid_setl_flag"] = "0"
        if claims:
            sp = self.f.split
            for k, col in (("fulamt_ownpay_amt", sp.fulamt_ownpay_fen), ("overlmt_selfpay", sp.overlmt_fen),
                           ("preselfpay_amt", sp.preselfpay_fen), ("inscp_scp_amt", sp.inscp_scp_fen)):
                data[k] = money.format_fen(sum(int(col[base + ln.pos]) for ln in lines))
        return data

    def _twin(self, st: _Visit, env: dict, batch: str) -> dict:
        """The one-shot settlement of the same lines (section 7): same msgid, envelope and data; the lines in
        force of the batch in upload order; a batch other than the visit's first on an mdtrt_id of its own."""
        i, vis = st.i, self.vis
        d = vis.data[i]
        rows = vis.feedetail[i]
        data = {k: d[k] for k in ("psn_no", "mdtrt_cert_type", "mdtrt_cert_no", "med_type")}
        data["mdtrt_id"] = st.mdtrt_id if batch in ("", "1") else f"{st.mdtrt_id}-{batch}"
        data.update({"insutype": d["insutype"], "medfee_sumamt": env["input"]["data"]["medfee_sumamt"],
                     "acct_used_flag": d["acct_used_flag"], "begntime": d["begntime"]})
        for k in ("endtime", "dise_codg"):
            if k in d:
                data[k] = d[k]
        lines = [{**rows[ln.pos], "feedetl_sn": ln.sn} for ln in self._in_force(st, batch)]
        twin = dict(env)
        twin["input"] = {"data": data, "feedetail": lines}
        return twin

    def _settle_env(self, st: _Visit, t: int, batch: str, pre: bool, msgid: str | None = None,
                    claims: bool | None = None) -> dict:
        ip = bool(self.vis.ip[st.i])
        infno = ("2303" if pre else "2304") if ip else ("2206" if pre else "2207")
        if claims is None:
            claims = not pre and self.f.u[st.i][U_CLAIMS] < CLAIMS_SHARE
        return self._env(st, infno, t, {"data": self._settle_data(st, batch, claims)}, msgid=msgid)

    def _presettle(self, st: _Visit, t: int, batch: str) -> None:
        env = self._settle_env(st, t, batch, True)
        self.add(t, env, self._note(st, "presettle", self.f.fc[st.i], twin=self._twin(st, env, batch)))

    def _settle(self, st: _Visit, t: int, batch: str) -> None:
        env = self._settle_env(st, t, batch, False, msgid=st.reserved)
        st.reserved = None
        twin = self._twin(st, env, batch)
        self.add(t, env, self._note(st, "settle", self.f.fc[st.i], twin=twin))
        if self.f.fc[st.i] is None:
            st.settled[batch] = (env, twin)
        st.last_settle = (env, twin, batch)
        if st.first_settle is None:
            st.first_settle = (env, twin)

    def _reverse(self, st: _Visit, t: int, _arg) -> None:
        senv, twin, batch = st.last_settle
        env = self._reversal(st, senv, t)
        st.reversal = env
        del st.settled[batch]
        twin_env = env
        if twin["input"]["data"]["mdtrt_id"] != st.mdtrt_id:
            twin_env = self._reversal(st, senv, t, mdtrt_id=twin["input"]["data"]["mdtrt_id"])
            twin_env["msgid"] = env["msgid"]
        self.add(t, env, self._note(st, "reverse", None, twin=twin_env))

    def _undo_settle(self, st: _Visit, t: int, _arg) -> None:
        senv, twin, batch = st.last_settle
        env = self._undo(st, t, senv["msgid"], senv["infno"], "undo")
        self.s.events[-1][4].twin = env
        st.reversal = env
        del st.settled[batch]

    def _void(self, st: _Visit, t: int, what: str) -> None:
        """2601 for a message the hub never got: the hub voids its msgid (section 11)."""
        st.reserved = self.s.msgid_for(self.s.inst_vis[st.i], t)
        oinfno = {"upload": "2301" if self.vis.ip[st.i] else "2204",
                  "settle": "2304" if self.vis.ip[st.i] else "2207"}[what]
        self._undo(st, t, st.reserved, oinfno, "void")

    def _late(self, st: _Visit, t: int, arg: tuple) -> None:
        """The voided message arrives after all: E_VOIDED, nothing changes; the hospital sends it again."""
        what, detail = arg
        msgid = st.reserved
        if what == "upload":
            batch, c0, c1 = detail
            first = self.vis.feedetail[st.i]
            env = self._upload_env(st, t, [_Line(p, first[p]["feedetl_sn"], batch, "") for p in range(c0, c1)], msgid)
        else:
            env = self._settle_env(st, t, detail, False, msgid=msgid)
        st.reserved = None
        self.add(t, env, self._note(st, "late", "E_VOIDED"))

    # ------------------------------------------------------------ anomalies

    def _bad(self, st: _Visit, t: int, kind: str) -> None:
        """A request wrong on purpose. What the twin stream holds: the same request when it is one-shot."""
        twin = None
        if kind == FALLBACK_ANOMALY:  # on a visit that may have no settlement
            env = self._env(st, "2209", t, {"data": {}})
            kind, expect = "unknown_infno", "E_UNSUPPORTED"
            twin = None if st.stepwise else env
        elif kind in STEP_ANOMALIES:
            env, expect = self._bad_step(st, t, kind), STEP_ANOMALIES[kind]
        elif kind.startswith("reverse_"):
            env = self._bad_reversal(st, t, kind, st.last_settle[0])
            expect = ANOMALY_EXPECT[kind] if kind != "reverse_twice" or st.reversal is not None else "E_NOT_FOUND"
            twin = None if st.stepwise else env
        elif st.stepwise and kind not in _TWIN_FORM:
            env, expect = self._bad_step_form(st, t, kind), ANOMALY_EXPECT[kind]
        else:  # one-shot: a one-shot visit's settlement, or a step-wise visit's twin on a fresh mdtrt_id
            env = self.s.bad_settlement_of(kind, self.f.kinds_oneshot.index(kind), st.i, st.first_settle[1], t)
            expect, twin = ANOMALY_EXPECT[kind], env
        self.add(t, env, self._note(st, "anomaly", expect, twin=twin, anomaly=kind), phase=5)

    def _bad_reversal(self, st: _Visit, t: int, kind: str, senv: dict) -> dict:
        rng, v = self.rng, self.v
        i = st.i
        if kind == "reverse_twice" and st.reversal is not None:
            return self._reversal(st, senv, t)
        if kind == "reverse_other_institution":
            other = (self.s.inst_vis[i] + 1 + int(rng.integers(0, max(len(v.inst_code) - 1, 1)))) % len(v.inst_code)
            return self._reversal(st, senv, t, inst=other)
        if kind == "reverse_mismatch":
            if rng.random() < 0.5:
                return self._reversal(st, senv, t, infno="2208" if self.vis.ip[i] else "2305")
            return self._reversal(st, senv, t, mdtrt_id=senv["input"]["data"]["mdtrt_id"] + "X")
        return self._reversal(st, senv, t, setl_id=f"S{v.inst_code[self.s.inst_vis[i]]}000000009999999999")

    def _bad_step_form(self, st: _Visit, t: int, kind: str) -> dict:
        """A one-shot anomaly (stream.ANOMALIES) in the step-wise form of visit st."""
        i, vis, rng = st.i, self.vis, self.rng
        if kind == "duplicate_visit":  # a second registration while the first holds
            env = self._register_env(st, t)
            if not vis.ip[i]:
                env["input"]["data"]["ipt_otp_no"] = st.otp_no
            return env
        if kind == "total_amount":  # before the settlement: the total one fen off
            env = self._settle_env(st, t, "" if vis.ip[i] else "1", False, claims=False)
            d = env["input"]["data"]
            d["medfee_sumamt"] = money.format_fen(money.parse_fen(d["medfee_sumamt"]) + 1)
            return env
        senv = st.last_settle[0]
        d = dict(senv["input"]["data"])
        msgid = None
        if kind == "bad_med_type":
            d["med_type"] = "99" if rng.random() < 0.5 else ("11" if vis.ip[i] else "21")
        elif kind == "bad_decimal":
            d["medfee_sumamt"] = "1," + d["medfee_sumamt"]
        elif kind == "missing_field":
            del d["psn_no"]
        elif kind == "unknown_person":
            d["psn_no"] = f"P{vis.insuplc[i]}X{int(rng.integers(0, 10**7)):07d}"
        elif kind == "insutype_mismatch":
            d["insutype"] = "390" if d["insutype"] == "310" else "310"
        elif kind == "msgid_reused":
            d["acct_used_flag"] = "0" if d["acct_used_flag"] == "1" else "1"
            msgid = senv["msgid"]
        env = self._env(st, senv["infno"], t, {"data": d}, msgid=msgid)
        regions, inst_region = self.s.regions, self.s.inst_region
        inst = self.s.inst_vis[i]
        if kind == "unknown_institution":
            env["fixmedins_code"] = f"H{regions[inst_region[inst]]}9{int(rng.integers(0, 10**4)):04d}"
        elif kind == "wrong_region":
            env["mdtrtarea_admvs"] = regions[(inst_region[inst] + 1) % len(regions)]
        elif kind == "unknown_infno":
            env["infno"] = "2209"
        return env

    def _bad_step(self, st: _Visit, t: int, kind: str) -> dict:
        """A step-wise request wrong on purpose (STEP_ANOMALIES)."""
        i, vis, v, s = st.i, self.vis, self.v, self.s
        ip = bool(vis.ip[i])
        d = vis.data[i]
        settled_batch = st.last_settle[2] if st.last_settle is not None else ("" if ip else "1")
        in_force = [ln for ln in st.lines if ln.in_force] or st.lines
        if kind in ("upload_two_visits", "upload_two_batches", "duplicate_line"):
            first = in_force[0]
            lines = [self._line_row(st, first), self._line_row(st, first)]
            if kind == "duplicate_line":  # the first line again, as a new upload
                return self._env(st, "2301" if ip else "2204", t, {"feedetail": lines[:1]})
            lines[0]["feedetl_sn"], lines[1]["feedetl_sn"] = self._sn(st), self._sn(st)
            if kind == "upload_two_visits":
                lines[1]["mdtrt_id"] = self.last_mdtrt_id if self.last_mdtrt_id not in ("", st.mdtrt_id) \
                    else st.mdtrt_id + "X"
            else:
                lines[1]["chrg_bchno"] = first.batch + "B"
            return self._env(st, "2301" if ip else "2204", t, {"feedetail": lines})
        if kind == "upload_other_institution":
            row = self._line_row(st, in_force[0])
            row["feedetl_sn"] = self._sn(st)
            inst = s.inst_vis[i]
            other = (inst + 1 + int(self.rng.integers(0, max(len(v.inst_code) - 1, 1)))) % len(v.inst_code)
            if other == inst:  # a world of one institution: an unknown one
                env = self._env(st, "2301" if ip else "2204", t, {"feedetail": [row]})
                env["fixmedins_code"] = env["fixmedins_code"] + "9"
                return env
            return s.envelope("2301" if ip else "2204", other, vis.insuplc[i], t, {"feedetail": [row]})
        if kind == "undo_not_undoable":
            omsgid, oinfno = (st.info_msgid, "2203") if st.info_msgid else (st.register_msgid, "2403")
            return self._env(st, "2601", t, {"data": {"psn_no": d["psn_no"], "omsgid": omsgid, "oinfno": oinfno}})
        if kind == "split_mismatch":  # before the settlement
            env = self._settle_env(st, t, "" if ip else "1", False, claims=True)
            dd = env["input"]["data"]
            # One fen moved from one part to another (a hospital's catalogue out of date), or added.
            keys = ("inscp_scp_amt", "preselfpay_amt", "overlmt_selfpay", "fulamt_ownpay_amt")
            k_down = next((k for k in keys if money.parse_fen(dd[k]) > 0), None)
            k_up = "fulamt_ownpay_amt" if k_down != "fulamt_ownpay_amt" else "inscp_scp_amt"
            dd[k_up] = money.format_fen(money.parse_fen(dd[k_up]) + 1)
            if k_down is not None:
                dd[k_down] = money.format_fen(money.parse_fen(dd[k_down]) - 1)
            return env
        if kind == "settle_before_discharge":
            return self._settle_env(st, t, "", False)
        if kind == "settle_empty_batch":
            env = self._settle_env(st, t, "1", False, claims=False)
            env["input"]["data"]["chrg_bchno"] = "9"
            return env
        senv = st.last_settle[0]
        if kind in ("mid_setl", "med_type_mismatch", "settle_twice", "unknown_visit"):
            dd = dict(senv["input"]["data"])
            if kind == "mid_setl":
                dd["mid_setl_flag"] = "1"
            elif kind == "med_type_mismatch":
                dd["med_type"] = {"11": "13", "13": "11", "14": "11", "21": "24", "24": "21"}[dd["med_type"]]
            elif kind == "unknown_visit":
                dd["mdtrt_id"] = f"M{v.inst_code[s.inst_vis[i]]}000000009999999999"
            return self._env(st, senv["infno"], t, {"data": dd})
        if kind == "revoke_settled":
            if ip:
                return self._env(st, "2302", t, {"data": [{"feedetl_sn": in_force[0].sn, "mdtrt_id": st.mdtrt_id,
                                                           "psn_no": d["psn_no"]}]})
            return self._env(st, "2205", t, {"data": {"mdtrt_id": st.mdtrt_id, "chrg_bchno": settled_batch,
                                                      "psn_no": d["psn_no"]}})
        if kind == "undo_settled_upload":
            msgid = next(m for m, ls in st.uploads if any(ln.in_force and ln.batch == settled_batch for ln in ls))
            return self._env(st, "2601", t, {"data": {"psn_no": d["psn_no"], "omsgid": msgid,
                                                      "oinfno": "2301" if ip else "2204"}})
        assert kind == "cancel_settled", kind
        return self._cancel_env(st, t)

    # ------------------------------------------------------------ retries

    def retries(self, n_retry: int) -> None:
        """The same envelope, byte for byte, sent again after a timeout; its twin's twin again."""
        pool = self.committed or [(e[0], e[3], e[4]) for e in self.s.events]
        for k in self.rng.integers(0, len(pool), n_retry).tolist():
            t, env, note = pool[k]
            again = orjson.loads(orjson.dumps(env))
            twin = None if note.twin is None else orjson.loads(orjson.dumps(note.twin))
            expect = note.expect if note.step != "query" else UNCERTAIN
            self.s.events.append((self._later(t, 180), 6, len(self.s.events), again,
                                  Note(note.visit, "retry", expect, twin, None, note.stepwise)))

    def _later(self, t: int, mean_s: float) -> int:
        return t + 1 + int(self.rng.exponential(mean_s))
