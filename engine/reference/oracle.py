"""The plain-Python reference of docs/contract.md: the oracle for tests.

Readable first: one function per step of the spec, dicts and ints, one request
at a time, state in memory. The compiled pipeline (engine.core.engine) must give
the same reply, field for field, for every stream of requests.

The reference is layered like the contract: engine.reference.rules (sections
3-6), engine.reference.settle (section 7), engine.reference.stepwise (section
11), engine.reference.filing (2501/2502), engine.reference.recon (3201/3202 of section 8). ReferenceEngine
reads an envelope, answers 1101, keeps idempotency by msgid (and the msgids
a 2601 voided) and dispatches the rest.
"""
from __future__ import annotations

import datetime as _dt
import json

from engine.contract import money
from engine.contract.protocol import (
    E_MSGID_REUSED, E_SCHEMA, E_UNKNOWN_PERSON, E_UNSUPPORTED, E_VOIDED, ENVELOPE_DEPTH_MAX, INFNO_PERSON,
    REVERSE_INFNOS, SETTLE_INFNOS, Refused, canonical,
)
from engine.reference import recon
from engine.reference.reading import not_json, nesting_depth, raw_json_depth, request_time_ok
from engine.reference.filing import FILING_INFNOS, FilingBook
from engine.reference.recon import RECONCILE_INFNOS
from engine.reference.settle import field_str
from engine.reference.stepwise import COMMITTING_INFNOS, STEPWISE_INFNOS, StepwiseBook, is_stepwise
from engine.world.loader import DAY_OPEN

KNOWN_INFNOS = SETTLE_INFNOS | REVERSE_INFNOS | RECONCILE_INFNOS | STEPWISE_INFNOS | FILING_INFNOS | {INFNO_PERSON}


class ReferenceEngine(FilingBook, StepwiseBook):
    """Handles envelopes one at a time, in order, in memory (sections 3-9 and 11, filings online)."""

    # -- entry point

    def handle_body(self, body: bytes) -> dict:
        """One JSON body in, as replay reads it: its depth from the raw text, then decoded, the
        clock its inf_time (when a string)."""
        if raw_json_depth(body) > ENVELOPE_DEPTH_MAX:
            # Section 7 (v2): not read at all, so neither its msgid nor its inf_time answers.
            wall = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            return self.reply(None, wall, None, Refused(E_SCHEMA, f"nested deeper than {ENVELOPE_DEPTH_MAX} levels"))
        try:
            env = json.loads(body, parse_float=str, parse_constant=not_json)
        except (ValueError, RecursionError):  # not JSON, or nested past what json.loads follows
            env = None
        clock = env.get("inf_time") if isinstance(env, dict) else None
        return self.handle(env, clock if isinstance(clock, str) else None)

    def handle(self, env: object, clock: str | None = None) -> dict:
        """One envelope in, one reply out. `clock` is the time of the reply (replay: inf_time)."""
        wall = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        now = clock or wall
        if nesting_depth(env) > ENVELOPE_DEPTH_MAX:
            return self.reply(None, wall, None, Refused(E_SCHEMA, f"nested deeper than {ENVELOPE_DEPTH_MAX} levels"))
        msgid = env.get("msgid") if isinstance(env, dict) else None
        if clock is not None and not request_time_ok(clock):
            # The replay clock is the request's inf_time: a time of the request like any other.
            return self.reply(msgid, wall, None, Refused(E_SCHEMA, "inf_time: not a time within 2000-2099"))
        try:
            if not isinstance(env, dict) or not isinstance(env.get("infno"), str):
                raise Refused(E_SCHEMA, "not an envelope")
            infno = env["infno"]
            if infno not in KNOWN_INFNOS:
                raise Refused(E_UNSUPPORTED, f"infno {infno}")
            if infno == INFNO_PERSON:
                output = self.person_info(env, now)
            elif infno in RECONCILE_INFNOS:
                output = recon.answer(env, self.institutions, self.committed)
            else:
                committing = infno in COMMITTING_INFNOS or infno in REVERSE_INFNOS or infno in FILING_INFNOS
                if committing:
                    field_str(env, "msgid")
                    inp = canonical(env.get("input"))
                    hit = self.journal.get(msgid)
                    if hit is not None:
                        # Another institution's msgid is never answered with its reply (section 7, v2).
                        if hit[0] == infno and hit[1] == inp and hit[3] == env.get("fixmedins_code"):
                            return hit[2]
                        raise Refused(E_MSGID_REUSED, f"msgid {msgid}")
                    if msgid in self.voided:
                        # Section 11: a msgid voided by a 2601 never takes effect, whatever arrives with it.
                        raise Refused(E_VOIDED, f"msgid {msgid} was voided by a 2601")
                if infno in FILING_INFNOS:
                    output = self.filing(env, now)
                elif is_stepwise(env):
                    output = self.stepwise(env, now)
                elif infno in REVERSE_INFNOS:
                    output = self.reverse(env, now)
                else:
                    output = self.settle(env, now)
                reply = self.reply(msgid, now, output)
                if committing:
                    self.journal[msgid] = (infno, inp, reply, env.get("fixmedins_code"))
                return reply
        except Refused as r:
            return self.reply(msgid, now, None, r)
        return self.reply(msgid, now, output)

    @staticmethod
    def reply(msgid: object, now: str, output: dict | None, err: Refused | None = None) -> dict:
        r = {
            "infcode": 0 if err is None else -1,
            "inf_refmsgid": msgid if isinstance(msgid, str) else "",
            "refmsg_time": now,
            "respond_time": now,
            "err_msg": "" if err is None else (err.detail or err.code),
        }
        if err is not None:
            r["err_code"] = err.code
            r["output"] = {}
        else:
            r["output"] = output
        return r

    # -- 1101

    def person_info(self, env: dict, now: str) -> dict:
        data = (env.get("input") or {}).get("data") if isinstance(env.get("input"), dict) else None
        if not isinstance(data, dict):
            raise Refused(E_SCHEMA, "input.data")
        kind = field_str(data, "mdtrt_cert_type")
        no = field_str(data, "mdtrt_cert_no")
        if kind == "01":
            p = self.persons.get(no)
        elif kind in ("02", "03"):
            psn_no = self.by_certno.get(no)
            p = self.persons.get(psn_no) if psn_no else None
        else:
            raise Refused(E_SCHEMA, "mdtrt_cert_type must be 01, 02 or 03")
        if p is None:
            raise Refused(E_UNKNOWN_PERSON)
        self.refuse_in_maintenance(p, now)
        return {
            "baseinfo": {"psn_no": p.psn_no, "certno": p.certno, "psn_name": p.psn_name},
            "insuinfo": [{
                "insutype": p.insutype, "psn_type": p.psn_type, "balc": money.format_fen(p.balc),
                "insuplc_admdvs": p.insuplc_admdvs,
            }],
            "filinginfo": [{
                "filing_type": f["filing_type"], "dest_admdvs": f["dest"],
                "begndate": money.format_day(f["begn"]),
                "enddate": None if f["end"] == DAY_OPEN else money.format_day(f["end"]),
                "status": f["status"],
            } for f in p.filings],
        }
