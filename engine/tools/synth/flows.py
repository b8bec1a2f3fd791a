"""Step-wise and mixed request streams (docs/contract.md section 11): visits as hospital
systems send them.

A one-shot visit is one settlement with its fee lines inline (section 7). A step-wise
visit is what a hospital information system sends over the visit's life:

- outpatient: 2201 register (its `ipt_otp_no` derived from the msgid), 2203 the
  medical facts (med_type, dise_codg for 14), the fee lines in one to three 2204
  uploads of one `chrg_bchno` (a few visits pay twice: two batches, each settled on
  its own), an occasional 2206, then 2207 naming `mdtrt_id` and `chrg_bchno`, with
  `medfee_sumamt` and, on most settlements, the four split totals computed as the hub
  will (engine.tools.synth.split);
- inpatient: 2401 admit, a 2301 upload for each day with fees, 2402 discharge, an
  occasional 2303, then 2304.

The visit's `mdtrt_id` is "M" + the msgid of its 2201/2401. Around them, at the rates
of the one-shot stream: person queries, pre-settlements, reversals (2208/2305 naming
the step-wise settlement's setl_id and mdtrt_id) followed by a corrected settlement
(2205 and a new upload, or 2302 of a line, then a new settlement) or by a
cancellation, visits pre-settled and then cancelled (2202/2404), retries, 2601 (undo an
upload and upload again, void a message and send it late: E_VOIDED, void or undo a
settlement, undo a registration or a discharge), 2403 and 2405, and requests wrong on
purpose, one-shot (ANOMALIES) and step-wise (STEP_ANOMALIES).

The hospital reacts to what the hub answers: a visit whose settlement the hub refuses
(engine.tools.synth.refusals) is cancelled, a visit refused at registration goes no
further, and only settlements that happened are reversed. A person has one step-wise
stay open at a time (the hub refuses a second 2401: E_DUPLICATE_VISIT); a stay that
would overlap another of the same person is sent one-shot (mixed) or left out (stepwise).

This module plans each visit's steps; engine.tools.synth.steps makes their envelopes.
Each request carries a `Note`: its visit, its step, the outcome it is meant to get and,
for a test, what the one-shot twin stream holds in its place (engine.tools.synth.stream
.Stream.twin_stream): a step-wise settlement's twin is the one-shot settlement of the
same lines, with the same msgid, envelope and data.

A visit's steps are in order in the stream, interleaved with other visits'; inf_time
never goes back except on a retry. The steps of a visit take place when the hospital
would send them, so a stay settled in the window was admitted days before it: a
step-wise stream begins before `start` by up to the longest stay.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.tools.synth.draws import EPOCH_DAY_SECONDS, day_of
from engine.tools.synth.refusals import UNCERTAIN, forecast
from engine.tools.synth.split import LineSplit, split_lines
from engine.tools.synth.view import WorldView
from engine.tools.synth.visits import Visits, concat_visits, visits

FLOW_ONESHOT, FLOW_STEPWISE, FLOW_MIXED = "oneshot", "stepwise", "mixed"
FLOWS = (FLOW_ONESHOT, FLOW_STEPWISE, FLOW_MIXED)
MIXED_STEPWISE_SHARE = 0.5  # of visits in a mixed stream, those sent step-wise

# Expected outcomes (Note.expect) other than None (success) and an err_code.
REFUSED = "REFUSED"  # some refusal
# UNCERTAIN (engine.tools.synth.refusals): success or a refusal.

# How hospitals send a visit.
OP_UPLOADS_P = (0.6, 0.3, 0.1)  # one, two or three uploads of an outpatient batch
TWO_BATCHES_SHARE = 0.08  # outpatient visits paid in two batches, each settled on its own
UNDO_INSTEAD_SHARE = 0.25  # reversals made by a 2601 (the hospital never got the settlement's reply)
STAY_CHANGE_SHARE = 0.03  # stays changed by a 2403
UNDISCHARGE_SHARE = 0.01  # discharges undone by a 2405 and made again
REVOKE_BEFORE_CANCEL_SHARE = 0.3  # cancellations preceded by revoking every line (2205/2302 "0000")
# 2601 scenarios, each on this share of step-wise visits that settle.
UNDO_SCENARIO_SHARE = 0.004
UNDO_SCENARIOS_OP = ("undo_upload", "void_upload", "void_settle", "undo_register")
UNDO_SCENARIOS_IP = UNDO_SCENARIOS_OP + ("undo_discharge",)
RESETTLE_SHARE = 0.5
PRESETTLE_ALONE_SHARE = 0.2
DRAW_ROUNDS_MAX = 16  # draws of visits until the stream's requests are planned
MARGIN_STAY_S = 3600  # two stays of a person closer than this count as overlapping

# Step-wise requests wrong on purpose, each with the refusal it gets (section 11).
STEP_ANOMALIES = {
    "upload_two_visits": "E_SCHEMA",  # one upload naming two visits
    "upload_two_batches": "E_SCHEMA",  # one 2204 naming two chrg_bchno
    "settle_empty_batch": "E_NOT_FOUND",  # a settlement of a batch with no lines
    "upload_other_institution": "E_FORBIDDEN",  # lines for another institution's visit
    "undo_not_undoable": "E_SCHEMA",  # 2601 of an infno it cannot undo
    "split_mismatch": "E_AMOUNT_MISMATCH",  # the hospital's split totals disagree with the hub's
    "settle_before_discharge": "E_STATE",  # 2304 of a stay not discharged
    "duplicate_line": "E_DUPLICATE_LINE",  # a feedetl_sn uploaded before
    "mid_setl": "E_UNSUPPORTED",  # an interim settlement
    "med_type_mismatch": "E_MISMATCH",  # a med_type other than the visit's
    "revoke_settled": "E_STATE",  # 2205/2302 of settled lines
    "settle_twice": "E_STATE",  # a second settlement of a settled batch
    "unknown_visit": "E_NOT_FOUND",  # a settlement naming no visit
    "undo_settled_upload": "E_STATE",  # 2601 of an upload whose lines are settled
    "cancel_settled": "E_STATE",  # 2202/2404 of a settled visit
}
FALLBACK_ANOMALY = "unknown_infno "  # the anomaly placed when no visit of the stream settles: an unknown infno
_REVERSALS = ("reverse", "undo_settle", "os_reverse")
_SETTLES = ("settle", "os_settle")
_STEP_OP_ONLY = frozenset({"upload_two_batches", "settle_empty_batch"})
_STEP_IP_ONLY = frozenset({"settle_before_discharge", "mid_setl"})
# What the one-shot ANOMALIES (engine.tools.synth.stream) get, in either flow.
ANOMALY_EXPECT = {
    "bad_med_type": "E_SCHEMA", "bad_decimal": "E_SCHEMA", "missing_field": "E_SCHEMA",
    "unknown_person": "E_UNKNOWN_PERSON", "unknown_institution": "E_UNKNOWN_INSTITUTION",
    "wrong_region": "E_FORBIDDEN", "insutype_mismatch": "E_MISMATCH", "line_amount": "E_AMOUNT_MISMATCH",
    "total_amount": "E_AMOUNT_MISMATCH", "line_limit": "E_LIMIT", "unknown_infno": "E_UNSUPPORTED",
    "duplicate_visit": "E_DUPLICATE_VISIT", "msgid_reused": "E_MSGID_REUSED", "no_qualification": REFUSED,
    "late_date": UNCERTAIN, "reverse_unknown": "E_NOT_FOUND", "reverse_other_institution": "E_FORBIDDEN",
    "reverse_twice": "E_ALREADY_REVERSED", "reverse_mismatch": "E_MISMATCH",
}
_BEFORE_SETTLE = frozenset({"split_mismatch", "duplicate_line", "settle_empty_batch"})

# Columns of the per-visit uniform draws (_Flow.decide).
(U_STEPWISE, U_ALONE, U_PRE, U_QUERY, U_REV, U_RESET, U_UNDO_INSTEAD, U_SCENARIO, U_UPLOADS, U_TWO, U_CLAIMS,
 U_CHANGE, U_REVOKE_ALL) = range(13)
N_U = 13


@dataclass(slots=True)
class Note:
    """What a request of a synthetic stream is (for tests and reports)."""

    visit: int  # the visit's draw index, -1 for none
    step: str  # what the request is in its visit ("register", "upload", "settle", "retry", "anomaly", ...)
    expect: str | None  # None: success; an err_code; REFUSED; UNCERTAIN
    twin: dict | None = None  # what the one-shot twin stream holds in its place; None: nothing
    anomaly: str | None = None  # the kind of a request wrong on purpose
    stepwise: bool = False  # the request belongs to a step-wise visit


def plan_rates(n: int, *, query_share: float, presettle_share: float, reversal_share: float,
               retry_share: float, malformed_share: float) -> dict:
    """Per-visit rates that give a step-wise or mixed stream the one-shot stream's mix per settlement, and
    the counts of retries and of requests wrong on purpose (shares of all requests, as in the one-shot stream)."""
    n_retry, n_bad = round(n * retry_share), round(n * malformed_share)
    settle_frac = max(1 - query_share - presettle_share - reversal_share * (1 + RESETTLE_SHARE) - retry_share
                      - malformed_share, 0.05)
    return dict(
        n_retry=n_retry, n_bad=n_bad, query=query_share / settle_frac,
        alone=presettle_share * PRESETTLE_ALONE_SHARE / settle_frac,
        pre=presettle_share * (1 - PRESETTLE_ALONE_SHARE) / settle_frac,
        rev=reversal_share / settle_frac,
    )


class Flow:
    """Plans a step-wise or mixed stream: visits and their steps until n requests (engine.tools.synth.steps
    then makes their envelopes)."""

    def __init__(self, v: WorldView, rng: np.random.Generator, n: int, *, start: str, days: int,
                 stepwise_share: float, draw: dict, rates: dict):
        self.v, self.rng, self.n = v, rng, n
        self.start_day = day_of(start)
        self.days, self.draw, self.rates = days, draw, rates
        self.stepwise_share = stepwise_share
        self.vis: Visits | None = None
        self.fc: list[str | None] = []
        self.u = np.zeros((0, N_U))
        self.plans: dict[int, list[list]] = {}
        self.stepwise: dict[int, bool] = {}
        self.alone: dict[int, bool] = {}
        self.stays: dict[int, list[tuple[int, int]]] = {}  # person row -> step-wise stays (first, last second)

    # ------------------------------------------------------------ planning

    def plan(self) -> None:
        """Draw visits and plan their steps until the requests left for visits are planned."""
        budget = self.n - self.rates["n_retry"] - self.rates["n_bad"]
        if budget < 1:
            raise ValueError("the shares leave no request for visits")
        ip = self.draw["inpatient_share"]
        s = self.stepwise_share
        est = s * ((1 - ip) * 5.0 + ip * 12.0) + (1 - s) * 1.1  # requests per visit, roughly
        remaining = budget
        self.order: list[int] = []
        for _ in range(DRAW_ROUNDS_MAX):
            k = max(16, math.ceil(remaining / est * 1.2))
            base = 0 if self.vis is None else len(self.vis.t)
            chunk = visits(self.v, self.rng, k, self.start_day, self.days, id_base=base, **self.draw)
            self.vis = chunk if self.vis is None else concat_visits(self.vis, chunk)
            self.fc += forecast(self.v, chunk)
            self.u = np.concatenate([self.u, self.rng.random((k, N_U))])
            for i in range(base, base + k):
                plan = self._plan_visit(i)
                if plan is None or len(plan) > remaining:
                    continue
                if self.stepwise[i] and self.vis.ip[i] and self.fc[i] != "E_NO_POLICY":
                    self.stays.setdefault(int(self.vis.psn[i]), []).append((int(plan[0][1]), int(plan[-1][1])))
                self.plans[i] = plan
                self.order.append(i)
                remaining -= len(plan)
                if remaining == 0:
                    break
            if remaining == 0:
                break
        self.fill = remaining  # queries that complete the count (fewer than the smallest visit)
        if not self.order:  # n smaller than any visit: queries only, by the first visit's patient
            self.order, self.plans[0] = [0], []
        self._prepare_columns()

    def _plan_visit(self, i: int) -> list[list] | None:
        """Visit i's steps; None for a stay that would overlap one of its person's, in a step-wise stream."""
        vis, u = self.vis, self.u[i]
        alone = bool(u[U_ALONE] < self.rates["alone"])
        stepwise = bool(u[U_STEPWISE] < self.stepwise_share)
        self.alone[i] = alone
        self.stepwise[i] = stepwise
        if not stepwise:
            return self._plan_oneshot(i, alone)
        if self.fc[i] == "E_NO_POLICY":
            return self._plan_refused_at_register(i)
        if not vis.ip[i]:
            return self._plan_op(i, alone)
        plan = self._plan_ip(i, alone)
        first, last = int(plan[0][1]), int(plan[-1][1])
        stays = self.stays.get(int(vis.psn[i]), ())
        if any(a - MARGIN_STAY_S <= last and first <= b + MARGIN_STAY_S for a, b in stays):
            if self.stepwise_share >= 1.0:
                return None
            self.stepwise[i] = False
            return self._plan_oneshot(i, alone)
        return plan

    def _plan_refused_at_register(self, i: int) -> list[list]:
        """A person without a policy: the registration is refused (E_NO_POLICY) and the visit goes no further."""
        f = self.vis.facts
        t = int(self.vis.t[i])
        r = t - self._ui(900, 1800) if f.late[i] else int(f.begn_t[i]) + (self._ui(0, 600) if self.vis.ip[i] else 0)
        return self._opening(i, False, r, r)[0]

    def _opening(self, i: int, alone: bool, r: int, card_t: int) -> tuple[list[list], str | None, int]:
        """A visit's first steps: the card read before `card_t` (on some visits), the registration (2201,
        2401) at `r`, registered twice when the first is undone by a 2601. (steps, the visit's 2601
        scenario, when it is registered)."""
        steps: list[list] = []
        if self.u[i][U_QUERY] < self.rates["query"]:
            steps.append(["query", card_t - self._ui(60, 900), None])
        scenario = self._scenario(i, alone, bool(self.vis.ip[i]))
        if scenario == "undo_register":
            steps += [["register", r, None], ["undo_register", r + self._ui(5, 60), None]]
            r += 60
        steps.append(["register", r, None])
        return steps, scenario, r

    def _ui(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi))

    def _later(self, t: int, mean_s: float) -> int:
        return t + 1 + int(self.rng.exponential(mean_s))

    def _scenario(self, i: int, alone: bool, ip: bool) -> str | None:
        """The 2601 scenario of a visit that settles, or None."""
        if alone or self.fc[i] is not None:
            return None
        scen = UNDO_SCENARIOS_IP if ip else UNDO_SCENARIOS_OP
        k = int(self.u[i][U_SCENARIO] / UNDO_SCENARIO_SHARE)
        return scen[k] if k < len(scen) else None

    def _plan_oneshot(self, i: int, alone: bool) -> list[list]:
        """A one-shot visit, as in the one-shot stream: query, pre-settlement, settlement, reversal, correction."""
        u, t = self.u[i], int(self.vis.t[i])
        day_start_s = self.start_day * EPOCH_DAY_SECONDS
        steps: list[list] = []
        if u[U_QUERY] < self.rates["query"]:
            steps.append(["query", max(t - self._ui(1200, 3600), day_start_s), None])
        if alone:
            steps.append(["os_pre", t, None])
            return steps
        if u[U_PRE] < self.rates["pre"]:
            steps.append(["os_pre", max(t - self._ui(60, 1200), day_start_s), None])
        steps.append(["os_settle", t, None])
        if self.fc[i] is None and u[U_REV] < self.rates["rev"]:
            tr = self._later(t, 2400)
            steps.append(["os_reverse", tr, None])
            if u[U_RESET] < RESETTLE_SHARE:
                steps.append(["os_resettle", self._later(tr, 600), None])
        return steps

    def _after_settle(self, i: int, steps: list[list], t: int, ip: bool, batch: str, batch_lines: int,
                      other_batch_settled: bool) -> None:
        """What follows a visit's (last) settlement: a cancellation after a refusal, or a reversal."""
        u, fc = self.u[i], self.fc[i]
        if fc in ("E_FILING_REQUIRED", "E_NO_QUALIFICATION"):
            steps.append(["cancel", self._later(t, 300), None])
            return
        if fc is not None or u[U_REV] >= self.rates["rev"]:
            return
        tr = self._later(t, 2400)
        steps.append(["undo_settle" if u[U_UNDO_INSTEAD] < UNDO_INSTEAD_SHARE else "reverse", tr, None])
        t2 = self._later(tr, 300)
        if u[U_RESET] < RESETTLE_SHARE:
            if batch_lines > 1 and ip:
                steps.append(["revoke_last_line", t2, None])
            elif batch_lines > 1:
                steps.append(["revoke_batch", t2, batch])
                t2 = self._later(t2, 120)
                steps.append(["reupload_corrected", t2, (batch, batch + "C")])
                batch += "C"
            steps.append(["settle", self._later(t2, 300), batch])
        elif other_batch_settled:
            steps.append(["revoke_batch", t2, batch])
        else:
            steps.append(["cancel", t2, None])

    def _alone_end(self, i: int, steps: list[list], t: int) -> None:
        """A visit pre-settled and never settled: the registration is cancelled."""
        t = self._later(t, 600)
        if self.u[i][U_REVOKE_ALL] < REVOKE_BEFORE_CANCEL_SHARE:
            steps.append(["revoke_all", t, None])
            t = self._later(t, 60)
        steps.append(["cancel", t, None])

    def _plan_op(self, i: int, alone: bool) -> list[list]:
        """An outpatient visit step-wise: 2201, 2203, its batch in one to three 2204 (or two batches), 2207."""
        vis, u, fc = self.vis, self.u[i], self.fc[i]
        f = vis.facts
        t, late = int(vis.t[i]), bool(f.late[i])
        r = t - self._ui(900, 1800) if late else int(f.begn_t[i])
        steps, scenario, r = self._opening(i, alone, r, r)
        steps.append(["info", r + self._ui(30, 300), None])
        lo_l = int(f.lines.lstart[i])
        nl = int(f.lines.nl[i])
        fee_t = f.lines.fee_t[lo_l:lo_l + nl].tolist()
        two = u[U_TWO] < TWO_BATCHES_SHARE and nl >= 2 and fc is None and not alone
        h = nl // 2
        batches = [("1", 0, h), ("2", h, nl)] if two else [("1", 0, nl)]
        n_up = 1 + int(np.searchsorted(np.cumsum(OP_UPLOADS_P), u[U_UPLOADS] * sum(OP_UPLOADS_P), side="right"))
        first_upload = True
        for bi, (batch, a, z) in enumerate(batches):
            k = 1 if two else min(n_up, z - a)
            cuts = np.linspace(a, z, k + 1).round().astype(int).tolist()
            for c0, c1 in zip(cuts[:-1], cuts[1:]):
                tu = (r + 300 if late else max(fee_t[c0:c1])) + self._ui(30, 300)
                self._upload_steps(steps, scenario if first_upload else None, tu, (batch, c0, c1))
                first_upload = False
            last = bi == len(batches) - 1
            ts = t if last else max(fee_t[a:z]) + self._ui(60, 600)
            if alone:
                steps.append(["presettle", ts, batch])
                self._alone_end(i, steps, ts)
                return steps
            if bi == 0 and u[U_PRE] < self.rates["pre"]:
                steps.append(["presettle", ts - self._ui(30, 300), batch])
            if last and scenario == "void_settle":
                steps += [["void", ts - self._ui(20, 60), "settle"], ["late", ts - self._ui(1, 19), ("settle", batch)]]
            steps.append(["settle", ts, batch])
        batch, a, z = batches[-1]
        self._after_settle(i, steps, t, False, batch, z - a, two)
        return steps

    def _upload_steps(self, steps: list[list], scenario: str | None, tu: int, arg: tuple) -> None:
        if scenario == "void_upload":
            steps += [["void", tu, "upload"], ["late", tu + self._ui(5, 60), ("upload", arg)]]
            tu += 90
        steps.append(["upload", tu, arg])
        if scenario == "undo_upload":
            steps += [["undo_upload", tu + self._ui(5, 60), None], ["reupload", tu + self._ui(70, 180), None]]

    def _plan_ip(self, i: int, alone: bool) -> list[list]:
        """A stay step-wise: 2401, a 2301 each day with fees, 2402, 2304."""
        vis, u = self.vis, self.u[i]
        f = vis.facts
        t, b, e = int(vis.t[i]), int(f.begn_t[i]), int(f.end_t[i])
        steps, scenario, r = self._opening(i, alone, b + self._ui(0, 600), b)
        if u[U_CHANGE] < STAY_CHANGE_SHARE:
            steps.append(["change", r + self._ui(600, 3600), None])
        lo_l = int(f.lines.lstart[i])
        nl = int(f.lines.nl[i])
        fee_t = f.lines.fee_t[lo_l:lo_l + nl]
        day = fee_t // EPOCH_DAY_SECONDS
        cuts = [0] + (np.flatnonzero(day[1:] != day[:-1]) + 1).tolist() + [nl]
        fee_l = fee_t.tolist()
        for g, (c0, c1) in enumerate(zip(cuts[:-1], cuts[1:])):
            self._upload_steps(steps, scenario if g == 0 else None, fee_l[c1 - 1] + self._ui(60, 1800), ("", c0, c1))
        td = e + self._ui(0, 300)
        steps.append(["discharge", td, None])
        if u[U_CHANGE] > 1 - UNDISCHARGE_SHARE:
            steps += [["undischarge", td + self._ui(30, 120), None], ["discharge", td + self._ui(130, 240), None]]
        elif scenario == "undo_discharge":
            steps += [["undo_discharge", td + self._ui(30, 120), None], ["discharge", td + self._ui(130, 240), None]]
        if alone:
            steps.append(["presettle", t, ""])
            self._alone_end(i, steps, t)
            return steps
        if u[U_PRE] < self.rates["pre"]:
            steps.append(["presettle", t - self._ui(60, 240), ""])
        if scenario == "void_settle":
            steps += [["void", t - self._ui(20, 50), "settle"], ["late", t - self._ui(1, 19), ("settle", "")]]
        steps.append(["settle", t, ""])
        self._after_settle(i, steps, t, True, "", nl, False)
        return steps

    # ------------------------------------------------------------ anomalies and the count

    def place_anomalies(self, n_bad: int, kinds_oneshot: tuple) -> None:
        """n_bad requests wrong on purpose, each a step of a visit that settles with success."""
        rng = self.rng
        targets = [i for i in self.order if self.fc[i] is None and any(s[0] in _SETTLES for s in self.plans[i])]
        sw_op = [i for i in targets if self.stepwise[i] and not self.vis.ip[i]]
        sw_ip = [i for i in targets if self.stepwise[i] and self.vis.ip[i]]
        reversed_ = [i for i in targets if any(s[0] in _REVERSALS for s in self.plans[i])]
        kinds = tuple(kinds_oneshot) + tuple(STEP_ANOMALIES)
        for _ in range(n_bad):
            for _try in range(64):
                kind = kinds[int(rng.integers(0, len(kinds)))]
                if kind in STEP_ANOMALIES:
                    pool = sw_op if kind in _STEP_OP_ONLY else sw_ip if kind in _STEP_IP_ONLY else sw_op + sw_ip
                else:  # reverse_twice: a reversed settlement, as the one-shot stream; else an unknown one
                    pool = reversed_ if kind == "reverse_twice" and reversed_ else targets
                if pool:
                    break
            else:  # no visit settles: an unknown infno after any visit
                pool, kind = list(self.order), FALLBACK_ANOMALY
            i = pool[int(rng.integers(0, len(pool)))]
            self._insert_anomaly(i, kind)

    def _insert_anomaly(self, i: int, kind: str) -> None:
        plan = self.plans[i]
        names = [s[0] for s in plan]

        def index(*what: str) -> int:
            return next((k for k, s in enumerate(names) if s in what), -1)

        settle = index(*_SETTLES)
        if kind == FALLBACK_ANOMALY:
            at = len(plan)
        elif kind in _BEFORE_SETTLE or (kind == "total_amount" and self.stepwise[i]):
            at = settle
        elif kind == "settle_before_discharge":
            at = index("discharge")
        elif kind == "duplicate_visit" and self.stepwise[i]:
            at = max(k for k, s in enumerate(names) if s == "register") + 1
        elif kind == "reverse_twice" and index(*_REVERSALS) >= 0:
            at = index(*_REVERSALS) + 1
        else:
            at = settle + 1
        assert at > 0 or not plan, (kind, names)
        t = int(plan[at - 1][1]) + 1 if at else int(self.vis.t[i])
        plan.insert(at, ["bad", t, kind])

    # ------------------------------------------------------------ envelopes

    def _prepare_columns(self) -> None:
        vis, v = self.vis, self.v
        f = vis.facts
        L = f.lines
        lvis = np.repeat(np.arange(len(vis.t)), L.nl)
        reg_prov = np.array([int(r[:2]) for r in v.regions], dtype=np.int64)
        self.split: LineSplit = split_lines(v, reg_prov[f.trt][lvis], L.code, L.fee_t // EPOCH_DAY_SECONDS, L.amt_fen,
                                            L.cnt, L.pric_micro, ~vis.ip[lvis])

    def finish(self, n_bad: int, kinds_oneshot: tuple) -> None:
        """The requests wrong on purpose (kinds_oneshot: stream.ANOMALIES, and STEP_ANOMALIES) and the
        queries that complete the count, placed among the visits' steps."""
        self.kinds_oneshot = tuple(kinds_oneshot)
        self.place_anomalies(n_bad, kinds_oneshot)
        rng = self.rng
        for _ in range(self.fill):
            i = self.order[int(rng.integers(0, len(self.order)))]
            t0 = int(self.plans[i][0][1]) if self.plans[i] else int(self.vis.t[i])
            self.plans[i].insert(0, ["query", t0 - self._ui(60, 900), None])
