"""Request streams (docs/contract.md sections 7 and 11): `gen_requests` turns drawn visits
into the envelopes a replay feeds, with pre-settlements, queries, reversals, retries and
requests wrong on purpose, in inf_time order. The stream builds one dict per
envelope and per fee line (that is its output), but every number in them was drawn
and formatted column-wise first (engine.tools.synth.visits).

`flow` says how visits are sent: "oneshot" (each a settlement with its lines inline,
section 7), "stepwise" (as hospital systems send them, section 11:
engine.tools.synth.flows) or "mixed" (a share of visits each way).
"""
from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from typing import Iterable

import orjson

from engine.contract import money
from engine.tools.synth.draws import EPOCH_DAY_SECONDS, day_of, rng_for, time_strs
from engine.tools.synth.flows import FLOW_MIXED, FLOW_ONESHOT, FLOW_STEPWISE, FLOWS, MIXED_STEPWISE_SHARE, Flow, Note
from engine.tools.synth import steps
from engine.tools.synth.flows import plan_rates
from engine.tools.synth.view import WorldView, world_view
from engine.tools.synth.visits import Visits, visits

# ---------------------------------------------------------------- request streams

# Order of events that fall on the same second: a card read comes before the
# pre-settlement, which comes before the settlement, and so on.
PHASE_QUERY, PHASE_PRE, PHASE_SETTLE, PHASE_REVERSE, PHASE_RESETTLE, PHASE_ANOMALY, PHASE_RETRY = range(7)
ENVELOPE_CONSTANTS = {"recer_sys_code": "YIDI", "infver": "V1.0", "opter_type": "1"}
OPERATORS_PER_INSTITUTION = 20
QUERY_UNKNOWN_SHARE = 0.03
PRESETTLE_ALONE_SHARE = 0.2  # pre-settlements the patient never settles
RESETTLE_SHARE = 0.5  # reversals followed by a corrected settlement of the same visit
# Requests that are wrong on purpose, each aimed at one refusal of section 7.
ANOMALIES = (
    "bad_med_type", "bad_decimal", "missing_field", "unknown_person", "unknown_institution",
    "wrong_region", "insutype_mismatch", "line_amount", "total_amount", "line_limit", "unknown_infno",
    "duplicate_visit", "msgid_reused", "no_qualification", "late_date",
    "reverse_unknown", "reverse_other_institution", "reverse_twice", "reverse_mismatch",
)


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic collector while millions of acyclic dicts are built.

    Every allocation burst would otherwise trigger full passes over all live
    objects (the caller's too); nothing built here holds a cycle.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _copy_input(inp: dict) -> dict:
    return {"data": dict(inp["data"]), "feedetail": [dict(ln) for ln in inp["feedetail"]]}


def _fmt_time(abs_s: int) -> str:
    day, sec = divmod(int(abs_s), EPOCH_DAY_SECONDS)
    return f"{money.format_day(day)} {sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}"


@dataclass
class Stream:
    """A generated stream: its envelopes and, for the step-wise and mixed flows, a Note on each."""

    envelopes: list[dict]
    notes: list[Note] | None  # None for the one-shot flow

    def twin_stream(self) -> tuple[list[int], list[dict]]:
        """The one-shot twin of the stream: (position in `envelopes`, envelope) of each request it holds.

        Requests of one-shot form are there unchanged; each step-wise settlement and
        pre-settlement is replaced by the one-shot request of the same lines (same
        msgid, envelope and data), its reversals follow it; the steps of visits and
        step-wise requests wrong on purpose are left out. Replayed on a second engine,
        each twin's reply equals the step-wise request's (section 11: "computed exactly
        as the section-7 request"), the twin's mdtrt_id aside for a visit's second batch.
        """
        if self.notes is None:
            return list(range(len(self.envelopes))), list(self.envelopes)
        keep = [k for k, nt in enumerate(self.notes) if nt.twin is not None]
        return keep, [self.notes[k].twin for k in keep]


def gen_requests(world: object, n: int, **kw) -> list[dict]:
    """n envelopes (docs/contract.md sections 7 and 11) against a world, in the order a replay feeds them.

    See gen_stream for the arguments; `flow` is "oneshot" unless given.
    """
    return gen_stream(world, n, **kw).envelopes


def gen_stream(
    world: object,
    n: int,
    *,
    seed: int = 1,
    start: str = "2026-11-20",
    days: int = 1,
    inpatient_share: float = 0.15,
    retry_share: float = 0.01,
    reversal_share: float = 0.01,
    malformed_share: float = 0.002,
    zipf_a: float = 1.1,
    presettle_share: float = 0.05,
    query_share: float = 0.03,
    cross_province_share: float = 0.70,
    local_share: float = 0.20,
    late_share: float = 0.003,
    not_in_catalogue_share: float = 0.01,
    flow: str = FLOW_ONESHOT,
    stepwise_share: float | None = None,
) -> Stream:
    """n envelopes (docs/contract.md sections 7 and 11) against a world, in the order a replay feeds them.

    world: a folder, an engine.world.World, or a WorldView (reuse one for many streams).
    The stream holds settlements (2207 outpatient, 2304 inpatient), pre-settlements
    (2206/2303) shortly before most of them, person queries (1101), reversals
    (2208/2305, some followed by a corrected settlement of the same visit),
    retries (the very same envelope again, later) and `malformed_share` requests
    that are wrong on purpose (ANOMALIES). inf_time never goes back, except on a
    retry, which repeats the original's inf_time with the rest of the envelope.
    cross_province_share and local_share split the visits; the rest are in another
    region of the insured province. Everything else is section 7 as written.

    flow: "oneshot" (the default: the stream above, the same bytes for the same
    seed as before flows existed), "stepwise" (every visit as hospital systems send
    it, section 11: engine.tools.synth.flows) or "mixed" (`stepwise_share` of the
    visits step-wise, default MIXED_STEPWISE_SHARE, the rest one-shot). In the
    step-wise and mixed flows the shares of queries, pre-settlements and reversals
    are kept per settlement (as in a one-shot stream of n requests), those of retries
    and requests wrong on purpose per request; `n` is the number of requests in every
    flow.
    """
    if n < 1:
        raise ValueError("n must be positive")
    if days < 1:
        raise ValueError("days must be positive")
    if zipf_a <= 0:
        raise ValueError("zipf_a must be positive")
    if flow not in FLOWS:
        raise ValueError(f"flow must be one of {', '.join(FLOWS)}: {flow!r}")
    if stepwise_share is not None and (flow != FLOW_MIXED or not 0.0 <= stepwise_share <= 1.0):
        raise ValueError("stepwise_share is a share in [0, 1], for the mixed flow")
    v = world if isinstance(world, WorldView) else world_view(world)
    with _gc_paused():
        if flow == FLOW_ONESHOT:
            return Stream(_stream(
                v, n, seed=seed, start=start, days=days, inpatient_share=inpatient_share, retry_share=retry_share,
                reversal_share=reversal_share, malformed_share=malformed_share, zipf_a=zipf_a,
                presettle_share=presettle_share, query_share=query_share, cross_province_share=cross_province_share,
                local_share=local_share, late_share=late_share, not_in_catalogue_share=not_in_catalogue_share), None)
        share = 1.0 if flow == FLOW_STEPWISE else (MIXED_STEPWISE_SHARE if stepwise_share is None else stepwise_share)
        rates = plan_rates(n, query_share=query_share, presettle_share=presettle_share,
                           reversal_share=reversal_share, retry_share=retry_share, malformed_share=malformed_share)
        draw = dict(inpatient_share=inpatient_share, cross_share=cross_province_share, local_share=local_share,
                    late_share=late_share, nic_share=not_in_catalogue_share, zipf_a=zipf_a)
        f = Flow(v, rng_for(seed, "requests-" + flow), n, start=start, days=days, stepwise_share=share, draw=draw,
                 rates=rates)
        f.plan()
        f.finish(rates["n_bad"], ANOMALIES)
        pairs = steps.envelopes(f, _Stream(v, f.rng, f.vis, f.start_day), rates["n_retry"])
        return Stream([e for e, _ in pairs], [nt for _, nt in pairs])


def _stream(v: WorldView, n: int, *, seed: int, start: str, days: int, inpatient_share: float,
            retry_share: float, reversal_share: float, malformed_share: float, zipf_a: float,
            presettle_share: float, query_share: float, cross_province_share: float, local_share: float,
            late_share: float, not_in_catalogue_share: float) -> list[dict]:
    """gen_requests on a view, with the collector paused.

    The parts draw from one generator in a fixed order (visits, pre-settlements,
    queries, reversals, anomalies, retries): the same seed gives the same stream.
    """
    rng = rng_for(seed, "requests")
    n_query = round(n * query_share)
    n_pre = round(n * presettle_share)
    n_rev = round(n * reversal_share)
    n_reset = int(n_rev * RESETTLE_SHARE)
    n_retry = round(n * retry_share)
    n_bad = round(n * malformed_share)
    n_settle = n - n_query - n_pre - n_rev - n_reset - n_retry - n_bad
    if n_settle < 1 or n_rev > n_settle:
        raise ValueError("the shares leave too few settlements")
    n_pre_alone = int(n_pre * PRESETTLE_ALONE_SHARE)
    nv = n_settle + n_pre_alone
    start_day = day_of(start)
    vis = visits(
        v, rng, nv, start_day, days, inpatient_share=inpatient_share, cross_share=cross_province_share,
        local_share=local_share, late_share=late_share, nic_share=not_in_catalogue_share, zipf_a=zipf_a,
    )
    s = _Stream(v, rng, vis, start_day)
    s.settlements(n_settle)
    s.presettlements(n_pre - n_pre_alone)
    s.queries(n_query)
    s.reversals(n_rev, n_reset)
    s.anomalies(n_bad)
    s.retries(n_retry)
    s.events.sort(key=lambda e: (e[0], e[1], e[2]))
    assert len(s.events) == n
    return [e[3] for e in s.events]


class _Stream:
    """The events of one stream, (second, phase, sequence, envelope), built part by part."""

    def __init__(self, v: WorldView, rng, vis: Visits, start_day: int):
        self.v, self.rng, self.vis, self.start_day = v, rng, vis, start_day
        self.regions = v.regions
        self.inst_region = v.inst_region.tolist()
        self.t_vis = vis.t.tolist()
        self.inst_vis = vis.inst.tolist()
        self.t_str_vis = time_strs(vis.t)
        self.events: list[tuple[int, int, int, dict]] = []
        self.seq = iter(range(1, 10**10))
        self.settles: list[tuple[int, int, dict]] = []  # (visit, t, envelope)
        self.committed: list[tuple[int, dict]] = []  # (t, envelope) of every change, retried later
        self.reversed: list[tuple[int, int, dict]] = []  # (settle index, t, envelope)

    # ------------------------------------------------------------ envelopes

    def msgid_for(self, inst: int, t: int) -> str:
        return f"{self.v.inst_code[inst]}{money.format_day(t // EPOCH_DAY_SECONDS).replace('-', '')}{next(self.seq):010d}"

    def envelope(self, infno: str, inst: int, insuplc: str, t: int, inp: dict, t_str: str | None = None,
                 msgid: str | None = None) -> dict:
        v = self.v
        opter = 1 + (inst * 7 + t // 3600) % OPERATORS_PER_INSTITUTION
        return {
            "infno": infno,
            "msgid": msgid or self.msgid_for(inst, t),
            "mdtrtarea_admvs": self.regions[self.inst_region[inst]],
            "insuplc_admdvs": insuplc,
            **ENVELOPE_CONSTANTS,
            "opter": f"{opter:04d}",
            "opter_name": f"收费员{opter:02d}",
            "inf_time": t_str or _fmt_time(t),
            "fixmedins_code": v.inst_code[inst],
            "fixmedins_name": v.inst_name[inst],
            "sign_no": f"{inst:06d}{t // EPOCH_DAY_SECONDS % 1000:03d}",
            "input": inp,
        }

    def add(self, t: int, phase: int, env: dict) -> None:
        self.events.append((t, phase, len(self.events), env))

    def later(self, t: int, mean_s: float) -> int:
        return t + 1 + int(self.rng.exponential(mean_s))

    def reversal(self, si: int, t: int, inst: int | None = None, infno: str | None = None,
                 mdtrt_id: str | None = None, setl_id: str | None = None) -> dict:
        """The reversal of settlement si; the arguments given replace its own (anomalies)."""
        vis = self.vis
        i, _, senv = self.settles[si]
        d = senv["input"]["data"]
        return self.envelope(
            infno or ("2305" if vis.ip[i] else "2208"), self.inst_vis[i] if inst is None else inst,
            vis.insuplc[i], t,
            {"data": {"setl_id": setl_id or "S" + senv["msgid"], "mdtrt_id": mdtrt_id or d["mdtrt_id"],
                      "psn_no": d["psn_no"]}},
        )

    # ------------------------------------------------------------ the parts, in drawing order

    def settlements(self, n_settle: int) -> None:
        """Settlements, and the pre-settlements that never become one (the visits past n_settle)."""
        vis, inst_vis, t_vis = self.vis, self.inst_vis, self.t_vis
        for i in range(len(t_vis)):
            inp = {"data": vis.data[i], "feedetail": vis.feedetail[i]}
            if i < n_settle:
                env = self.envelope("2304" if vis.ip[i] else "2207", inst_vis[i], vis.insuplc[i], t_vis[i], inp,
                                    self.t_str_vis[i])
                self.add(t_vis[i], PHASE_SETTLE, env)
                self.settles.append((i, t_vis[i], env))
            else:
                self.add(t_vis[i], PHASE_PRE, self.envelope("2303" if vis.ip[i] else "2206", inst_vis[i],
                                                            vis.insuplc[i], t_vis[i], inp, self.t_str_vis[i]))
        self.committed = [(t, env) for _, t, env in self.settles]

    def presettlements(self, n_pre: int) -> None:
        """Pre-settlements a few minutes before their settlement."""
        vis, rng, n_settle = self.vis, self.rng, len(self.settles)
        day_start_s = self.start_day * EPOCH_DAY_SECONDS
        for i in rng.choice(n_settle, size=min(n_pre, n_settle), replace=False).tolist():
            t = max(self.t_vis[i] - int(rng.integers(60, 1200)), day_start_s)
            self.add(t, PHASE_PRE, self.envelope("2303" if vis.ip[i] else "2206", self.inst_vis[i], vis.insuplc[i],
                                                 t, _copy_input(self.settles[i][2]["input"])))

    def queries(self, n_query: int) -> None:
        """Person queries (1101) when the card is read, before the visit's first request."""
        vis, rng = self.vis, self.rng
        day_start_s = self.start_day * EPOCH_DAY_SECONDS
        for i in rng.integers(0, len(self.t_vis), n_query).tolist():
            t = max(self.t_vis[i] - int(rng.integers(1200, 3600)), day_start_s)
            d = vis.data[i]
            data = {"mdtrt_cert_type": d["mdtrt_cert_type"], "mdtrt_cert_no": d["mdtrt_cert_no"]}
            if rng.random() < QUERY_UNKNOWN_SHARE:
                data = {"mdtrt_cert_type": "02", "mdtrt_cert_no": f"{vis.insuplc[i]}19000101999X"}
            self.add(t, PHASE_QUERY, self.envelope("1101", self.inst_vis[i], vis.insuplc[i], t, {"data": data}))

    def reversals(self, n_rev: int, n_reset: int) -> None:
        """Reversals of earlier settlements, the first n_reset followed by a corrected one."""
        vis, rng = self.vis, self.rng
        targets = rng.choice(len(self.settles), size=n_rev, replace=False).tolist()
        for k, si in enumerate(targets):
            t = self.later(self.settles[si][1], 2400)
            env = self.reversal(si, t)
            self.add(t, PHASE_REVERSE, env)
            self.reversed.append((si, t, env))
            self.committed.append((t, env))
            if k < n_reset:
                i, _, senv = self.settles[si]
                inp = _copy_input(senv["input"])
                if len(inp["feedetail"]) > 1:
                    inp["feedetail"].pop()
                    total = sum(money.parse_fen(ln["det_item_fee_sumamt"]) for ln in inp["feedetail"])
                    inp["data"]["medfee_sumamt"] = money.format_fen(total)
                t2 = self.later(t, 600)
                env2 = self.envelope(senv["infno"], self.inst_vis[i], vis.insuplc[i], t2, inp)
                self.add(t2, PHASE_RESETTLE, env2)
                self.committed.append((t2, env2))

    def anomalies(self, n_bad: int) -> None:
        """Requests wrong on purpose, each aimed at one refusal of section 7 (ANOMALIES)."""
        rng = self.rng
        for kind_i in rng.integers(0, len(ANOMALIES), n_bad).tolist():
            kind = ANOMALIES[kind_i]
            si = int(rng.integers(0, len(self.settles)))
            t = self.later(self.settles[si][1], 600)
            if kind.startswith("reverse_"):
                self.add(*self._bad_reversal(kind, si, t))
            else:
                self.add(t, PHASE_ANOMALY, self._bad_settlement(kind, kind_i, si, t))

    def _bad_reversal(self, kind: str, si: int, t: int) -> tuple[int, int, dict]:
        """(second, phase, envelope) of a reversal wrong on purpose."""
        rng, vis, v = self.rng, self.vis, self.v
        i, _, senv = self.settles[si]
        if kind == "reverse_twice" and self.reversed:
            si, tr, _ = self.reversed[int(rng.integers(0, len(self.reversed)))]
            t = self.later(tr, 600)
            env = self.reversal(si, t)
        elif kind == "reverse_other_institution":
            other = (self.inst_vis[i] + 1 + int(rng.integers(0, max(len(v.inst_code) - 1, 1)))) % len(v.inst_code)
            env = self.reversal(si, t, inst=other)
        elif kind == "reverse_mismatch":  # the other kind's infno, or another visit's mdtrt_id
            if rng.random() < 0.5:
                env = self.reversal(si, t, infno="2208" if vis.ip[i] else "2305")
            else:
                env = self.reversal(si, t, mdtrt_id=senv["input"]["data"]["mdtrt_id"] + "X")
        else:  # reverse_unknown, or reverse_twice with nothing reversed yet
            env = self.reversal(si, t, setl_id=f"S{v.inst_code[self.inst_vis[i]]}000000009999999999")
        return t, PHASE_ANOMALY, env

    def _bad_settlement(self, kind: str, kind_i: int, si: int, t: int) -> dict:
        i, _, senv = self.settles[si]
        return self.bad_settlement_of(kind, kind_i, i, senv, t)

    def bad_settlement_of(self, kind: str, kind_i: int, i: int, senv: dict, t: int) -> dict:
        """A copy of visit i's one-shot settlement `senv`, wrong in the way `kind` names (ANOMALIES)."""
        inp = _copy_input(senv["input"])
        d = inp["data"]
        d["mdtrt_id"] = d["mdtrt_id"] + f"B{kind_i:02d}{len(self.events):06d}"
        inst = self.inst_vis[i]
        bad = _Bad(senv["infno"], senv["insuplc_admdvs"])
        if kind in _ENVELOPE_ANOMALIES:
            self._spoil_envelope(kind, inst, bad)
        else:
            _spoil_input(kind, self.rng, inp, senv, bool(self.vis.ip[i]), self.start_day, bad)
        env = self.envelope(bad.infno, inst, bad.insuplc, t, inp, msgid=bad.msgid)
        env.update(bad.env_over)
        return env

    def _spoil_envelope(self, kind: str, inst: int, bad: "_Bad") -> None:
        rng, regions, inst_region = self.rng, self.regions, self.inst_region
        if kind == "unknown_institution":
            bad.env_over["fixmedins_code"] = f"H{regions[inst_region[inst]]}9{int(rng.integers(0, 10**4)):04d}"
        elif kind == "wrong_region":
            bad.env_over["mdtrtarea_admvs"] = regions[(inst_region[inst] + 1) % len(regions)]
        elif kind == "unknown_infno":
            bad.infno = "2209"

    def retries(self, n_retry: int) -> None:
        """Retries: the same envelope, byte for byte, sent again after a timeout."""
        for k in self.rng.integers(0, len(self.committed), n_retry).tolist():
            t, env = self.committed[k]
            self.add(self.later(t, 180), PHASE_RETRY, orjson.loads(orjson.dumps(env)))


_ENVELOPE_ANOMALIES = frozenset({"unknown_institution", "wrong_region", "unknown_infno"})


class _Bad:
    """How a request wrong on purpose differs from its settlement's envelope."""

    def __init__(self, infno: str, insuplc: str):
        self.infno, self.insuplc = infno, insuplc
        self.msgid: str | None = None
        self.env_over: dict[str, str] = {}


def _spoil_input(kind: str, rng, inp: dict, senv: dict, ip: bool, start_day: int, bad: _Bad) -> None:
    """Make a copied settlement input wrong in the way `kind` names (ANOMALIES)."""
    d, lines = inp["data"], inp["feedetail"]
    if kind == "bad_med_type":
        d["med_type"] = "99" if rng.random() < 0.5 else ("11" if ip else "21")
    elif kind == "bad_decimal":
        which = int(rng.integers(0, 3))
        if which == 0:
            lines[0]["det_item_fee_sumamt"] = lines[0]["det_item_fee_sumamt"] + "5"
        elif which == 1:
            lines[0]["pric"] = lines[0]["pric"] + "1"
        else:
            d["medfee_sumamt"] = "1," + d["medfee_sumamt"]
    elif kind == "missing_field":
        del d["psn_no" if rng.random() < 0.5 else "begntime"]
    elif kind == "unknown_person":
        d["psn_no"] = f"P{bad.insuplc}X{int(rng.integers(0, 10**7)):07d}"
    elif kind == "insutype_mismatch":
        d["insutype"] = "390" if d["insutype"] == "310" else "310"
    elif kind in ("line_amount", "total_amount", "line_limit"):
        _spoil_amounts(kind, d, lines)
    elif kind in ("duplicate_visit", "msgid_reused"):
        d["mdtrt_id"] = senv["input"]["data"]["mdtrt_id"]
        if kind == "msgid_reused":
            d["acct_used_flag"] = "0" if d["acct_used_flag"] == "1" else "1"
            bad.msgid = senv["msgid"]
    elif kind == "no_qualification":
        bad.infno = "2207"
        d["med_type"] = "14"
        d["dise_codg"] = "M99900"
        d.pop("endtime", None)
    elif kind == "late_date":
        late = _fmt_time(day_of(f"{money.day_year(start_day) - 1}-12-15") * EPOCH_DAY_SECONDS + 36_000)
        d["begntime"] = late
        if "endtime" in d:
            d["endtime"] = late


def _spoil_amounts(kind: str, d: dict, lines: list[dict]) -> None:
    """A line that does not add up, a total that does not, or a line of count zero."""
    if kind == "line_amount":
        bumped = money.parse_fen(lines[0]["det_item_fee_sumamt"]) + 5
        lines[0]["det_item_fee_sumamt"] = money.format_fen(bumped)
        d["medfee_sumamt"] = money.format_fen(money.parse_fen(d["medfee_sumamt"]) + 5)
    elif kind == "total_amount":
        d["medfee_sumamt"] = money.format_fen(money.parse_fen(d["medfee_sumamt"]) + 1)
    else:  # line_limit
        d["medfee_sumamt"] = money.format_fen(
            money.parse_fen(d["medfee_sumamt"]) - money.parse_fen(lines[0]["det_item_fee_sumamt"]))
        lines[0]["cnt"], lines[0]["det_item_fee_sumamt"] = "0.0000", "0.00"


def write_requests_jsonl(path: str, envelopes: Iterable[dict]) -> int:
    """One envelope per line, as the public requests.jsonl; returns the number written."""
    count = 0
    buf: list[bytes] = []
    with open(path, "wb") as f:
        for env in envelopes:
            buf.append(orjson.dumps(env))
            count += 1
            if len(buf) >= 4096:
                f.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            f.write(b"\n".join(buf) + b"\n")
    return count
