"""Visits: who is treated where and when, and the fee lines of each (docs/contract.md
sections 3 and 7), drawn column-wise for a whole request stream at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract import money
from engine.contract.protocol import LINES_MAX
from engine.tools.synth.draws import (
    CHRONIC_DISEASES, DESTINATION_WEIGHT, EPOCH_DAY_SECONDS, KIND_PRICE_MEDIAN_YUAN, KIND_PRICE_SIGMA, KIND_SERVICE,
    KIND_TCM, PRICE_MAX_MICRO, day_of, fmt_scaled, time_strs,
)
from engine.tools.synth.view import WorldView

CNT_MAX_UNITS = 100  # per line, far below the spec's 100,000
OP_LINES_MAX = 30
IP_LINES_MAX = 2_000
IP_LOS_DAYS_MAX = 90
assert IP_LINES_MAX <= LINES_MAX

GEO_CROSS, GEO_LOCAL, GEO_INTRA = 0, 1, 2
# Hospital level of the visit (1, 2, 3): inpatients go to bigger hospitals.
LEVEL_P_INPATIENT = (0.15, 0.35, 0.50)
LEVEL_P_OUTPATIENT = (0.25, 0.35, 0.40)
FREQUENT_PERSON_SHARE = 0.05  # visits by a small pool of frequent patients
FILED_SOURCE_SHARE = 0.70  # of cross-province visits, those by a person with a filing there
FILING_IN_FORCE_SHARE = 0.85  # of visits under a filing, those under one in force
CHRONIC_OTHER_DISEASE_SHARE = 0.03
DRUG_COUNTS = (1, 2, 3, 4, 5, 6, 10, 12, 14, 20, 28, 30)
DRUG_COUNT_P = (0.22, 0.18, 0.12, 0.06, 0.05, 0.07, 0.09, 0.05, 0.05, 0.04, 0.04, 0.03)


def _time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds into the day: a morning peak, a smaller afternoon peak, a few at night."""
    comp = rng.choice(3, size=n, p=[0.55, 0.35, 0.10])
    s = np.where(comp == 0, rng.normal(9.75 * 3600, 1.1 * 3600, n),
                 np.where(comp == 1, rng.normal(15.0 * 3600, 1.2 * 3600, n), rng.uniform(0, EPOCH_DAY_SECONDS, n)))
    return np.clip(s, 0, EPOCH_DAY_SECONDS - 1).astype(np.int64)


def _csr(keys: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by key: (rows in key order, start per key, count per key)."""
    order = np.argsort(keys, kind="stable")
    count = np.bincount(keys, minlength=n_keys)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return order, start, count


@dataclass
class Visits:
    t: np.ndarray  # int64 absolute seconds of the settling request
    inst: np.ndarray  # int64 institution row
    psn: np.ndarray  # int64 person row
    ip: np.ndarray  # bool inpatient
    insuplc: list[str]
    data: list[dict]
    feedetail: list[list[dict]]
    # What the step-wise flows need beyond the one-shot inputs (engine.tools.synth.flows):
    # the visit's facts and its fee lines as parsed numbers, visit after visit.
    facts: "VisitFacts | None" = None


@dataclass
class VisitFacts:
    """The drawn facts behind each visit's input, kept as columns."""

    mt: np.ndarray  # int64 med_type
    trt: np.ndarray  # int64 treatment region (index into WorldView.regions)
    begn_t: np.ndarray  # int64 absolute seconds of begntime
    end_t: np.ndarray  # int64 absolute seconds of endtime (inpatients)
    late: np.ndarray  # bool: an outpatient visit uploaded late, dated the December before
    lines: "_Lines"


def visits(v: WorldView, rng: np.random.Generator, nv: int, start_day: int, days: int, *,
           inpatient_share: float, cross_share: float, local_share: float, late_share: float,
           nic_share: float, zipf_a: float, id_base: int = 0) -> Visits:
    """nv visits, each a complete settlement input (section 7), drawn column-wise.

    The parts draw from `rng` in a fixed order (who, where, which institution, when,
    fee lines, inputs): the same seed gives the same visits. `id_base` numbers the
    visits' mdtrt_id from there, for a second draw into the same stream.
    """
    if len(v.psn_no) == 0 or not v.inst_code:
        raise ValueError("the world has no persons or no institutions")
    geo = _Geography(v)
    who = _who(v, rng, nv, start_day, inpatient_share, cross_share, local_share)
    trt = _treatment_region(v, geo, rng, who)
    inst = _institution(v, rng, who.ip, trt)
    when = _when(rng, nv, start_day, days, who.ip, late_share)
    lines = _fee_lines(v, geo, rng, who.ip, when, trt, nic_share, zipf_a)
    data, feedetail = _inputs(v, rng, who, trt, when, lines, id_base)
    insuplc = [v.regions[r_] for r_ in who.own.tolist()]
    facts = VisitFacts(mt=who.mt, trt=trt, begn_t=when.begn_t, end_t=when.end_t, late=when.late, lines=lines)
    return Visits(t=when.t, inst=inst, psn=who.psn, ip=who.ip, insuplc=insuplc, data=data, feedetail=feedetail,
                  facts=facts)


class _Geography:
    """The provinces and regions where care can be given (those with an institution)."""

    def __init__(self, v: WorldView):
        regions = v.regions
        self.reg_prov = np.array([int(r[:2]) for r in regions], dtype=np.int64)
        capital = np.array([r[2:4] == "01" for r in regions])
        self.treatable = np.bincount(v.inst_region, minlength=len(regions)) > 0
        self.treat = treat = np.flatnonzero(self.treatable)  # sorted codes: grouped by province
        self.provs_t, self.p_start, self.p_count = np.unique(self.reg_prov[treat], return_index=True,
                                                             return_counts=True)
        self.p_cap = np.array([bool(capital[treat[s]]) for s in self.p_start])
        pw = np.array([DESTINATION_WEIGHT.get(f"{p:02d}", 1.0) for p in self.provs_t])
        self.pw = pw / pw.sum()

    def region_in_province(self, rng: np.random.Generator, pi: np.ndarray) -> np.ndarray:
        """A treatable region of province row pi: the capital three times as likely."""
        c = self.p_count[pi]
        w_cap = np.where(self.p_cap[pi], 3.0, 1.0)
        first = rng.random(pi.size) < w_cap / (w_cap + c - 1)
        other = 1 + (rng.random(pi.size) * np.maximum(c - 1, 1)).astype(np.int64)
        return self.treat[self.p_start[pi] + np.where(first | (c == 1), 0, np.minimum(other, c - 1))]

    def other_province(self, rng: np.random.Generator, own_pi: np.ndarray) -> np.ndarray:
        """A province row other than own_pi (when there is another), by destination weight."""
        n_provs = self.provs_t.size
        k = rng.choice(n_provs, size=own_pi.size, p=self.pw)
        if n_provs > 1:
            clash = k == own_pi
            k[clash] = (own_pi[clash] + rng.integers(1, n_provs, int(clash.sum()))) % n_provs
        return k


@dataclass
class _Who:
    """What kind of visit, by whom, and the filing or qualification it is made under."""

    ip: np.ndarray  # bool inpatient
    mt: np.ndarray  # int64 med_type
    geo: np.ndarray  # GEO_* of the visit
    psn: np.ndarray  # int64 person row
    own: np.ndarray  # int64 the person's insured region
    fil_row: np.ndarray  # int64 filing row a visit by a filed person is made under
    fil_src: np.ndarray  # bool: the person was chosen for that filing
    chr_row: np.ndarray  # int64 chronic qualification row of a med_type 14 visit


def _who(v: WorldView, rng: np.random.Generator, nv: int, start_day: int, inpatient_share: float,
         cross_share: float, local_share: float) -> _Who:
    n_psn = len(v.psn_no)
    ip = rng.random(nv) < inpatient_share
    u = rng.random(nv)
    mt = np.where(ip, np.where(u < 0.88, 21, 24), np.where(u < 0.80, 11, np.where(u < 0.88, 13, 14)))
    n_chr, n_fil = v.chr_psn.size, v.fil_psn.size
    if n_chr == 0:
        mt[mt == 14] = 11
    g = rng.random(nv)
    geo = np.where(g < cross_share, GEO_CROSS, np.where(g < cross_share + local_share, GEO_LOCAL, GEO_INTRA))
    psn = rng.integers(0, n_psn, nv)
    frequent = rng.choice(n_psn, size=max(1, n_psn // 200), replace=False)
    freq = rng.random(nv) < FREQUENT_PERSON_SHARE
    psn[freq] = frequent[rng.integers(0, frequent.size, int(freq.sum()))]
    # A visit under a filing: most under one in force on the first day of the
    # window, the rest under any (expired, not yet begun: UNFILED after all).
    fil_row = rng.integers(0, max(n_fil, 1), nv)
    in_force = np.flatnonzero((v.fil_begn <= start_day) & (start_day <= v.fil_last))
    if in_force.size:
        use = rng.random(nv) < FILING_IN_FORCE_SHARE
        fil_row = np.where(use, in_force[rng.integers(0, in_force.size, nv)], fil_row)
    fil_src = (geo == GEO_CROSS) & (rng.random(nv) < FILED_SOURCE_SHARE) & (mt != 14) & (n_fil > 0)
    if n_fil:
        psn = np.where(fil_src, v.fil_psn[fil_row], psn)
    chr_row = rng.integers(0, max(n_chr, 1), nv)
    if n_chr:
        psn = np.where(mt == 14, v.chr_psn[chr_row], psn)
    return _Who(ip=ip, mt=mt, geo=geo, psn=psn, own=v.psn_region[psn], fil_row=fil_row, fil_src=fil_src,
                chr_row=chr_row)


def _treatment_region(v: WorldView, geo: _Geography, rng: np.random.Generator, who: _Who) -> np.ndarray:
    """Where each visit is treated: another province by default, the own region or
    province for local and intra-province visits, a filing's destination for filed persons."""
    nv, own = who.psn.size, who.own
    treat, p_start, p_count, provs_t = geo.treat, geo.p_start, geo.p_count, geo.provs_t
    own_pi = np.searchsorted(provs_t, geo.reg_prov[own])
    own_pi_ok = (own_pi < provs_t.size) & (provs_t[np.minimum(own_pi, provs_t.size - 1)] == geo.reg_prov[own])
    own_pi = np.where(own_pi_ok, own_pi, 0)

    trt = geo.region_in_province(rng, geo.other_province(rng, np.where(own_pi_ok, own_pi, -1)))
    local = (who.geo == GEO_LOCAL) & geo.treatable[own]
    trt = np.where(local, own, trt)
    intra = (who.geo == GEO_INTRA) & own_pi_ok
    if intra.any():
        c = p_count[own_pi]
        pick = treat[p_start[own_pi] + (rng.random(nv) * c).astype(np.int64)]
        pick = np.where((pick == own) & (c > 1),
                        treat[p_start[own_pi] + (np.searchsorted(treat, own) - p_start[own_pi] + 1) % np.maximum(c, 1)],
                        pick)
        trt = np.where(intra, pick, trt)
    if v.fil_psn.size and who.fil_src.any():
        trt = _filing_destination(v, geo, rng, who, trt)
    return trt


def _filing_destination(v: WorldView, geo: _Geography, rng: np.random.Generator, who: _Who,
                        trt: np.ndarray) -> np.ndarray:
    """trt with each filed person's visit moved to a treatable region its filing covers
    (a region, a city xxxx00 or a province xx0000), where there is one."""
    regions, treat, nv = v.regions, geo.treat, who.psn.size
    enc = pc.dictionary_encode(v.fil_dest)
    dests = enc.dictionary.to_pylist()
    dest_id = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    cand: list[np.ndarray] = []
    for d in dests:
        if d.endswith("0000"):
            hit = [i for i in treat if regions[i][:2] == d[:2]]
        elif d.endswith("00"):
            hit = [i for i in treat if regions[i][:4] == d[:4]]
        else:
            hit = [i for i in treat if regions[i] == d]
        cand.append(np.array(hit, dtype=np.int64))
    c_count = np.array([len(c) for c in cand], dtype=np.int64)
    c_start = np.concatenate([[0], np.cumsum(c_count)[:-1]])
    c_flat = np.concatenate(cand + [np.zeros(1, np.int64)])
    d = dest_id[who.fil_row]
    ok = who.fil_src & (c_count[d] > 0)
    pick = c_flat[c_start[d] + (rng.random(nv) * np.maximum(c_count[d], 1)).astype(np.int64)]
    return np.where(ok, pick, trt)


def _institution(v: WorldView, rng: np.random.Generator, ip: np.ndarray, trt: np.ndarray) -> np.ndarray:
    """The institution: by level within the region, any level if that one is missing."""
    nv, n_reg = ip.size, len(v.regions)
    lv = np.where(ip, rng.choice(3, size=nv, p=LEVEL_P_INPATIENT), rng.choice(3, size=nv, p=LEVEL_P_OUTPATIENT))
    k_rows, k_start, k_count = _csr(v.inst_region * 3 + (v.inst_lv - 1), n_reg * 3)
    r_rows, r_start, r_count = _csr(v.inst_region, n_reg)
    key = trt * 3 + lv
    by_lv = k_rows[np.minimum(k_start[key] + (rng.random(nv) * k_count[key]).astype(np.int64), k_rows.size - 1)]
    any_lv = r_rows[np.minimum(r_start[trt] + (rng.random(nv) * r_count[trt]).astype(np.int64), r_rows.size - 1)]
    return np.where(k_count[key] > 0, by_lv, any_lv)


@dataclass
class _When:
    t: np.ndarray  # int64 absolute seconds of the settling request
    begn_t: np.ndarray  # int64 begntime
    end_t: np.ndarray  # int64 endtime (inpatients)
    fee_hi: np.ndarray  # int64 the latest fee_ocur_time
    late: np.ndarray  # bool: dated the December before (uploaded late)


def _when(rng: np.random.Generator, nv: int, start_day: int, days: int, ip: np.ndarray,
          late_share: float) -> _When:
    """A day of the window (weekends quieter), a time of day; inpatients stayed days
    before the discharge settlement, outpatients minutes to hours."""
    dw = np.array([0.6 if money.day_to_date(start_day + d).weekday() >= 5 else 1.0 for d in range(days)])
    t = (start_day + rng.choice(days, size=nv, p=dw / dw.sum())) * EPOCH_DAY_SECONDS + _time_of_day(rng, nv)
    end_t = t - rng.integers(300, 3600, nv)
    los = np.clip(np.rint(np.exp(np.log(7.0) + 0.6 * rng.standard_normal(nv))), 1, IP_LOS_DAYS_MAX).astype(np.int64)
    begn_t = np.where(ip, end_t - los * EPOCH_DAY_SECONDS - rng.integers(0, 6 * 3600, nv),
                      t - rng.integers(600, 3 * 3600, nv))
    fee_hi = np.where(ip, end_t, t - 60)
    # A few outpatient visits uploaded late, from December of the year before (E_DATE
    # for a person whose accounting year has already moved on).
    late = ~ip & (rng.random(nv) < late_share)
    prev_dec = day_of(f"{money.day_year(start_day) - 1}-12-01") * EPOCH_DAY_SECONDS
    late_begn = prev_dec + rng.integers(8 * 3600, 31 * EPOCH_DAY_SECONDS - 8 * 3600, nv)
    begn_t = np.where(late, late_begn, begn_t)
    fee_hi = np.where(late, late_begn + rng.integers(600, 3 * 3600, nv), fee_hi)
    return _When(t=t, begn_t=begn_t, end_t=end_t, fee_hi=fee_hi, late=late)


@dataclass
class _Lines:
    """The fee lines of every visit, visit after visit."""

    nl: np.ndarray  # int64 lines per visit
    lstart: np.ndarray  # int64 first line of each visit
    medfee: np.ndarray  # int64 fen, sum of each visit's lines
    rows: list[dict]  # feedetail rows (section 7)
    # The same lines as parsed numbers (section 3's inputs), and the code each row names.
    amt_fen: np.ndarray  # int64
    cnt: np.ndarray  # int64 1/10,000 units
    pric_micro: np.ndarray  # int64
    fee_t: np.ndarray  # int64 absolute seconds of fee_ocur_time
    code: list[str]


def _fee_lines(v: WorldView, geo: _Geography, rng: np.random.Generator, ip: np.ndarray, when: _When,
               trt: np.ndarray, nic_share: float, zipf_a: float) -> _Lines:
    """Fee lines: how many, when, which codes of the treatment province's catalogue, counts and prices."""
    nv = ip.size
    nl = np.where(ip, np.clip(np.rint(np.exp(np.log(60.0) + 0.7 * rng.standard_normal(nv))), 1, IP_LINES_MAX),
                  np.minimum(rng.geometric(0.16, nv), OP_LINES_MAX)).astype(np.int64)
    n_lines = int(nl.sum())
    lvis = np.repeat(np.arange(nv), nl)
    lstart = np.concatenate([[0], np.cumsum(nl)[:-1]])
    fee_t = when.begn_t[lvis] + (rng.random(n_lines) * (when.fee_hi - when.begn_t)[lvis]).astype(np.int64)
    code_id, cap, fake, m = _fee_codes(v, geo, rng, trt, lvis, nic_share, zipf_a)
    cnt, pric = _counts_and_prices(rng, v.code_kind[code_id], cap)
    assert n_lines == 0 or float(pric.max()) * float(cnt.max()) < 2.0**62, "ext would overflow int64"
    amt = (pric * cnt + 50_000_000) // 100_000_000  # money.ext, column-wise
    # Lines of a visit in the order they were charged.
    o = np.lexsort((fee_t, lvis))
    fee_t, code_id, cnt, pric, amt, fake, m = fee_t[o], code_id[o], cnt[o], pric[o], amt[o], fake[o], m[o]
    medfee = np.add.reduceat(amt, lstart) if nv else np.zeros(0, np.int64)

    code_s = pc.take(v.codes, pa.array(code_id)).to_pylist()
    for i in np.flatnonzero(fake & (m > 0)).tolist():
        # A national code the province does not list (or a mistyped one).
        code_s[i] = code_s[i][:-3] + "999"
    pos = (np.arange(n_lines) - lstart[lvis]).tolist()
    width = max(4, len(str(int(nl.max())))) if nv else 4
    sn_s = [f"{j + 1:0{width}d}" for j in range(int(nl.max()) if nv else 0)]
    ml_s = [f"L{j}" for j in range(len(sn_s))]
    rows = [
        {"feedetl_sn": sn_s[j], "med_list_codg": c, "medins_list_codg": ml_s[j], "det_item_fee_sumamt": a,
         "cnt": q, "pric": p, "fee_ocur_time": f}
        for j, c, a, q, p, f in zip(
            pos, code_s, fmt_scaled(amt, 2).to_pylist(), fmt_scaled(cnt, 4).to_pylist(),
            fmt_scaled(pric, 6).to_pylist(), time_strs(fee_t),
        )
    ]
    return _Lines(nl=nl, lstart=lstart, medfee=medfee, rows=rows, amt_fen=amt, cnt=cnt, pric_micro=pric, fee_t=fee_t,
                  code=code_s)


def _fee_codes(v: WorldView, geo: _Geography, rng: np.random.Generator, trt: np.ndarray, lvis: np.ndarray,
               nic_share: float, zipf_a: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per line: (code id, price cap in micro-yuan or -1, not in the province's catalogue,
    codes in the treatment province's catalogue)."""
    n_lines = lvis.size
    n_codes = len(v.codes)
    if n_codes == 0:
        raise ValueError("the world has an empty catalogue")
    reg_prov = geo.reg_prov
    # The treatment province's catalogue: row cp of cat_provs, m codes (0: none).
    cp = np.minimum(np.searchsorted(v.cat_provs, reg_prov[trt]), v.cat_provs.size - 1)
    m = np.where(v.cat_provs[cp] == reg_prov[trt], v.cat_count[cp], 0)[lvis]
    # Zipf(zipf_a) ranks, bounded by the province's catalogue: inverse transform
    # on one shared table of cumulative weights.
    cdf = np.cumsum(np.arange(1, int(v.cat_count.max()) + 1, dtype=np.float64) ** -zipf_a)
    r = np.searchsorted(cdf, rng.random(n_lines) * cdf[np.maximum(m - 1, 0)], side="right")
    row = v.cat_start[cp][lvis] + np.minimum(r, np.maximum(m - 1, 0))
    code_id = v.cat_code_id[row]
    cap = v.cat_cap_micro[row]
    # Codes the province does not list: drawn from every code, and mistyped later.
    fake = (rng.random(n_lines) < nic_share) | (m == 0)
    code_id = np.where(fake, rng.integers(0, n_codes, n_lines), code_id)
    cap = np.where(fake, -1, cap)
    return code_id, cap, fake, m


def _counts_and_prices(rng: np.random.Generator, kind: np.ndarray, cap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per line: count in 1/10,000 units and price in micro-yuan."""
    n_lines = kind.size
    # Counts: packs of drugs, single services and consumables, some fractions.
    drug_n = np.asarray(DRUG_COUNTS)[rng.choice(len(DRUG_COUNTS), size=n_lines, p=DRUG_COUNT_P)]
    svc_n = np.where(rng.random(n_lines) < 0.7, 1, rng.integers(2, 6, n_lines))
    cons_n = np.where(rng.random(n_lines) < 0.8, 1, rng.integers(2, 11, n_lines))
    cnt = np.where(kind <= KIND_TCM, drug_n, np.where(kind == KIND_SERVICE, svc_n, cons_n)) * 10_000
    frac = rng.random(n_lines) < 0.08
    cnt = np.where(frac, np.where(rng.random(n_lines) < 0.5, 5_000, rng.integers(100, 100_000, n_lines)), cnt)
    cnt = np.clip(cnt, 1, CNT_MAX_UNITS * 10_000).astype(np.int64)
    # Prices: around the cap where there is one (some above it), else by kind.
    free_yuan = np.asarray(KIND_PRICE_MEDIAN_YUAN)[kind] * np.exp(
        np.asarray(KIND_PRICE_SIGMA)[kind] * rng.standard_normal(n_lines))
    price_yuan = np.where(cap >= 0, cap / 1e6 * rng.uniform(0.55, 1.12, n_lines), free_yuan)
    pric = np.clip(np.rint(price_yuan * 1e6), 10_000, PRICE_MAX_MICRO).astype(np.int64)
    u = rng.random(n_lines)
    pric = np.where(u < 0.65, pric // 10_000 * 10_000, np.where(u < 0.8, pric // 100 * 100, pric))
    return cnt, pric


def _inputs(v: WorldView, rng: np.random.Generator, who: _Who, trt: np.ndarray, when: _When,
            lines: _Lines, id_base: int = 0) -> tuple[list[dict], list[list[dict]]]:
    """The settlement input of each visit: its `data` and its `feedetail` rows (section 7)."""
    nv, regions = who.psn.size, v.regions
    psn_pa = pa.array(who.psn)
    psn_no = pc.take(v.psn_no, psn_pa).to_pylist()
    certno = pc.take(v.psn_certno, psn_pa).to_pylist()
    insutype = pc.take(v.psn_insutype, psn_pa).to_pylist()
    if v.chr_psn.size:
        dise = pc.take(v.chr_dise, pa.array(who.chr_row)).to_pylist()
        other = rng.random(nv) < CHRONIC_OTHER_DISEASE_SHARE
        alt = np.asarray(CHRONIC_DISEASES)[rng.integers(0, len(CHRONIC_DISEASES), nv)]
        dise = [a if o_ else d for d, a, o_ in zip(dise, alt.tolist(), other.tolist())]
    else:
        dise = [None] * nv
    u = rng.random(nv)
    cert_type = np.where(u < 0.7, "02", np.where(u < 0.9, "01", "03")).tolist()
    emp = np.array([t_ == "310" for t_ in insutype], dtype=bool)
    acct = np.where(rng.random(nv) < np.where(emp, 0.8, 0.1), "1", "0").tolist()
    begn_s, end_s = time_strs(when.begn_t), time_strs(when.end_t)
    t_day = when.t // EPOCH_DAY_SECONDS
    ymd = {d: money.format_day(int(d)).replace("-", "") for d in np.unique(t_day).tolist()}
    medfee_s = fmt_scaled(lines.medfee, 2).to_pylist()
    data, feedetail = [], []
    ip_l, mt_l, trt_l = who.ip.tolist(), who.mt.tolist(), trt.tolist()
    lstart_l, nl_l, rows = lines.lstart.tolist(), lines.nl.tolist(), lines.rows
    t_day_l = t_day.tolist()
    for i in range(nv):
        d = {
            "psn_no": psn_no[i],
            "mdtrt_cert_type": cert_type[i],
            "mdtrt_cert_no": psn_no[i] if cert_type[i] == "01" else certno[i],
            "med_type": str(mt_l[i]),
            "mdtrt_id": f"{regions[trt_l[i]]}{ymd[t_day_l[i]]}{id_base + i:08d}",
            "insutype": insutype[i],
            "medfee_sumamt": medfee_s[i],
            "acct_used_flag": acct[i],
            "begntime": begn_s[i],
        }
        if ip_l[i]:
            d["endtime"] = end_s[i]
        if mt_l[i] == 14:
            d["dise_codg"] = dise[i]
        data.append(d)
        feedetail.append(rows[lstart_l[i]:lstart_l[i] + nl_l[i]])
    return data, feedetail


def concat_visits(a: Visits, b: Visits) -> Visits:
    """The visits of a, then those of b (a second draw into one stream: b drawn with id_base = len(a.t))."""
    fa, fb = a.facts, b.facts
    assert fa is not None and fb is not None
    la, lb = fa.lines, fb.lines
    n_lines_a = len(la.rows)
    lines = _Lines(
        nl=np.concatenate([la.nl, lb.nl]), lstart=np.concatenate([la.lstart, lb.lstart + n_lines_a]),
        medfee=np.concatenate([la.medfee, lb.medfee]), rows=la.rows + lb.rows,
        amt_fen=np.concatenate([la.amt_fen, lb.amt_fen]), cnt=np.concatenate([la.cnt, lb.cnt]),
        pric_micro=np.concatenate([la.pric_micro, lb.pric_micro]), fee_t=np.concatenate([la.fee_t, lb.fee_t]),
        code=la.code + lb.code,
    )
    facts = VisitFacts(mt=np.concatenate([fa.mt, fb.mt]), trt=np.concatenate([fa.trt, fb.trt]),
                       begn_t=np.concatenate([fa.begn_t, fb.begn_t]), end_t=np.concatenate([fa.end_t, fb.end_t]),
                       late=np.concatenate([fa.late, fb.late]), lines=lines)
    return Visits(t=np.concatenate([a.t, b.t]), inst=np.concatenate([a.inst, b.inst]),
                  psn=np.concatenate([a.psn, b.psn]), ip=np.concatenate([a.ip, b.ip]), insuplc=a.insuplc + b.insuplc,
                  data=a.data + b.data, feedetail=a.feedetail + b.feedetail, facts=facts)
