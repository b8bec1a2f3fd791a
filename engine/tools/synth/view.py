"""The world as a request stream sees it: the columns `gen_requests` draws from,
read from a world folder or from a loaded engine.world World (the same view either way).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.contract.protocol import TEMP_FILING_TYPES
from engine.tools.synth.draws import KIND_CONSUMABLE, KIND_SERVICE, KIND_TCM, KIND_WESTERN, rng_for
from engine.world.loader import DAY_OPEN, World


@dataclass
class WorldView:
    """The columns of a world that gen_requests draws from; build once with world_view()."""

    regions: list[str]  # sorted region codes of institutions and persons
    inst_code: list[str]
    inst_name: list[str]
    inst_region: np.ndarray  # int64 index into regions
    inst_lv: np.ndarray  # int64 1..3
    psn_no: pa.Array
    psn_certno: pa.Array
    psn_insutype: pa.Array
    psn_region: np.ndarray  # int64 index into regions
    chr_psn: np.ndarray  # int64 person row
    chr_dise: pa.Array
    fil_psn: np.ndarray  # int64 person row
    fil_dest: pa.Array
    fil_begn: np.ndarray  # int64 day
    fil_last: np.ndarray  # int64 last day in force (section 4), DAY_OPEN when open
    cat_provs: np.ndarray  # int64 province numbers with a catalogue (44 for 440000), sorted
    cat_start: np.ndarray  # int64, first row of each province in cat_code_id
    cat_count: np.ndarray  # int64, distinct codes of each province
    cat_code_id: np.ndarray  # int64 code ids, each province's codes from most to least used
    cat_cap_micro: np.ndarray  # int64 price cap of that code in that province, -1 none
    codes: pa.Array  # distinct codes of every province, sorted
    code_kind: np.ndarray  # int8 KIND_* of each distinct code
    # Every catalogue entry (each version of a code), for splitting lines as the hub
    # does (section 3; engine.tools.synth.split), sorted by ver_key.
    ver_key: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # version_key(prov, code id, begn)
    ver_end: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # last day, DAY_OPEN when open
    ver_lv: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # 1 A, 2 B, 3 C
    ver_selfpay_bp: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ver_cap_micro: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # -1 none
    ver_lmt: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # 1 inpatient use only
    # What section 5 says about refusals, per (insuplc_admdvs, insutype) with a policy.
    policies: dict = field(default_factory=dict)


# version_key: (province, code id) over 44 bits, then the day a version begins over 20.
VERSION_CODE_BITS, VERSION_DAY_BITS = 24, 20


def version_key(prov: np.ndarray, code_id: np.ndarray, day: np.ndarray) -> np.ndarray:
    """The sort key of a catalogue version, and the search key of a line on its day."""
    prov, code_id, day = (np.asarray(a, dtype=np.int64) for a in (prov, code_id, day))
    return ((prov << VERSION_CODE_BITS) | code_id) << VERSION_DAY_BITS | day


@dataclass(frozen=True)
class PolicyFacts:
    """The parts of a policy (section 5) that decide whether a settlement is refused."""

    unfiled_refused: bool  # reduction.unfiled is null: E_FILING_REQUIRED for an UNFILED visit
    op_requires_filing: bool  # outpatient.requires_filing (no WAIVED class when true)
    chronic: frozenset  # the diseases it lists (E_NO_QUALIFICATION for others)


def _read_strings(folder: str, name: str, cols: list[str]) -> dict[str, pa.Array]:
    t = pacsv.read_csv(
        os.path.join(folder, name),
        read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in cols}, include_columns=cols,
            null_values=[""], strings_can_be_null=True,
        ),
    )
    return {c: t.column(c).combine_chunks() for c in cols}


def _day_col(a: pa.Array) -> np.ndarray:
    """'YYYY-MM-DD' strings to day numbers; absent gives DAY_OPEN."""
    d = pc.cast(pc.strptime(a, format="%Y-%m-%d", unit="s"), pa.date32())
    return pc.fill_null(pc.cast(d, pa.int32()), DAY_OPEN).to_numpy(zero_copy_only=False).astype(np.int64)


def _six_months(begn_day: np.ndarray) -> np.ndarray:
    """money.six_months, column-wise: 6 calendar months on (day clamped), minus one day."""
    b = np.asarray(begn_day, dtype=np.int64).astype("datetime64[D]")
    month = b.astype("datetime64[M]")
    day_of_month = (b - month.astype("datetime64[D]")).astype(np.int64)  # 0-based
    target = month + 6
    target_first = target.astype("datetime64[D]")
    month_days = ((target + 1).astype("datetime64[D]") - target_first).astype(np.int64)
    return target_first.astype(np.int64) + np.minimum(day_of_month, month_days - 1) - 1


def _rows_of(keys: pa.Array, psn_no: pa.Array) -> np.ndarray:
    rows = pc.index_in(keys, value_set=psn_no)
    return pc.fill_null(rows, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def world_view(world: object) -> WorldView:
    """Columns for gen_requests, from a world folder (read directly with Arrow, not
    validated: run load_world for that) or from an engine.world.World.

    Both give the same view, so a stream does not depend on how the world was passed.
    """
    c = _columns_of_world(world) if isinstance(world, World) else _columns_of_folder(os.fspath(world))
    keep = c.chr_psn >= 0
    chr_psn, chr_dise = c.chr_psn[keep], c.chr_dise.filter(pa.array(keep))
    keep = c.fil_psn >= 0
    fil_psn, fil_dest = c.fil_psn[keep], c.fil_dest.filter(pa.array(keep))
    # The last day each filing is in force (section 4), so that a visit made
    # under a filing can be made while it holds.
    six = _six_months(c.fil_begn[keep])
    fil_last = c.fil_end[keep]
    temp = np.isin(c.fil_type[keep], sorted(TEMP_FILING_TYPES))
    fil_last = np.where(temp & (fil_last == DAY_OPEN), six, fil_last)
    fil_last = np.where(temp | (c.fil_status[keep] == "2"), np.minimum(fil_last, six), fil_last)
    fil_begn = c.fil_begn[keep]

    regions = sorted(set(c.inst_adm) | set(pc.unique(c.insuplc).to_pylist()))
    region_pa = pa.array(regions)
    psn_region = pc.index_in(c.insuplc, value_set=region_pa).to_numpy(zero_copy_only=False).astype(np.int64)
    inst_region = pc.index_in(pa.array(c.inst_adm), value_set=region_pa).to_numpy().astype(np.int64)
    cat = _catalogue_view(c.cat_prov, c.cat_code, c.cat_cap)
    cat.update(_versions_view(c, cat["codes"]))
    return WorldView(
        regions=regions, inst_code=c.inst_code, inst_name=c.inst_name, inst_region=inst_region,
        inst_lv=np.asarray(c.inst_lv, dtype=np.int64), psn_no=c.psn_no, psn_certno=c.certno,
        psn_insutype=c.insutype, psn_region=psn_region, chr_psn=chr_psn, chr_dise=chr_dise,
        fil_psn=fil_psn, fil_dest=fil_dest, fil_begn=fil_begn, fil_last=fil_last, policies=c.policies, **cat,
    )


@dataclass
class _Columns:
    """A world's columns as the view needs them, before filtering and indexing."""

    inst_code: list[str]
    inst_name: list[str]
    inst_adm: list[str]
    inst_lv: np.ndarray
    psn_no: pa.Array
    certno: pa.Array
    insuplc: pa.Array
    insutype: pa.Array
    chr_psn: np.ndarray  # int64 person row, -1 for a person not in persons.csv
    chr_dise: pa.Array
    fil_psn: np.ndarray  # int64 person row, -1 for a person not in persons.csv
    fil_dest: pa.Array
    fil_type: np.ndarray
    fil_status: np.ndarray
    fil_begn: np.ndarray  # int64 day
    fil_end: np.ndarray  # int64 day, DAY_OPEN when open
    cat_prov: np.ndarray  # int64 province number of each catalogue row
    cat_code: pa.Array
    cat_cap: np.ndarray  # int64 micro-yuan, -1 none
    cat_lv: np.ndarray  # int64 1..3
    cat_selfpay_bp: np.ndarray  # int64, 0 when absent
    cat_lmt: np.ndarray  # int64 0/1
    cat_begn: np.ndarray  # int64 day
    cat_end: np.ndarray  # int64 day, DAY_OPEN when absent
    policies: dict  # (insuplc_admdvs, insutype) -> PolicyFacts


def _columns_of_world(world: World) -> _Columns:
    return _Columns(
        inst_code=list(world.inst_code), inst_name=list(world.inst_name), inst_adm=list(world.inst_admdvs),
        inst_lv=np.asarray(world.inst_lv, dtype=np.int64),
        psn_no=world.psn_no, certno=world.psn_certno, insuplc=world.psn_insuplc, insutype=world.psn_insutype,
        chr_psn=np.asarray(world.chr_psn, dtype=np.int64), chr_dise=pa.array(world.chr_dise, pa.string()),
        fil_psn=np.asarray(world.fil_psn, dtype=np.int64), fil_dest=pa.array(world.fil_dest, pa.string()),
        fil_type=np.asarray(world.fil_type, dtype=object), fil_status=np.asarray(world.fil_status, dtype=object),
        fil_begn=np.asarray(world.fil_begn, np.int64), fil_end=np.asarray(world.fil_end, np.int64),
        cat_prov=np.asarray(world.cat_prov, dtype=np.int64),
        cat_code=world.cat_code, cat_cap=np.asarray(world.cat_cap_micro, dtype=np.int64),
        cat_lv=np.asarray(world.cat_lv, np.int64), cat_selfpay_bp=np.asarray(world.cat_selfpay_bp, np.int64),
        cat_lmt=np.asarray(world.cat_lmt, np.int64), cat_begn=np.asarray(world.cat_begn, np.int64),
        cat_end=np.asarray(world.cat_end, np.int64),
        policies={(p.insuplc_admdvs, p.insutype): PolicyFacts(
            unfiled_refused=p.reduction_bp["unfiled"] is None, op_requires_filing=bool(p.op_requires_filing),
            chronic=frozenset(p.chronic)) for p in world.policies},
    )


def _columns_of_folder(folder: str) -> _Columns:
    inst = _read_strings(folder, "institutions.csv", ["fixmedins_code", "fixmedins_name", "admdvs", "hosp_lv"])
    psn = _read_strings(folder, "persons.csv", ["psn_no", "certno", "insuplc_admdvs", "insutype"])
    chr_ = _read_strings(folder, "chronic.csv", ["psn_no", "dise_codg"])
    fil = _read_strings(folder, "filings.csv", ["psn_no", "filing_type", "dest_admdvs", "begndate", "enddate",
                                                "status"])
    cat = _read_strings(folder, "catalogue.csv", ["prov_admdvs", "med_list_codg", "pric_uplmt_amt", "chrgitm_lv",
                                                  "selfpay_prop", "lmt_used_flag", "begndate", "enddate"])
    # Read as a float and rounded to the micro-yuan, a cap is exact below 10**9
    # yuan (15 significant digits), and a ratio of four decimals to the bp: the
    # view equals the one built from a loaded World.
    cap_f = pc.cast(pc.fill_null(cat["pric_uplmt_amt"], "-1"), pa.float64()).to_numpy(zero_copy_only=False)
    selfpay_f = pc.cast(pc.fill_null(cat["selfpay_prop"], "0"), pa.float64()).to_numpy(zero_copy_only=False)
    return _Columns(
        inst_code=inst["fixmedins_code"].to_pylist(), inst_name=inst["fixmedins_name"].to_pylist(),
        inst_adm=inst["admdvs"].to_pylist(), inst_lv=pc.cast(inst["hosp_lv"], pa.int64()).to_numpy(),
        psn_no=psn["psn_no"], certno=psn["certno"], insuplc=psn["insuplc_admdvs"], insutype=psn["insutype"],
        chr_psn=_rows_of(chr_["psn_no"], psn["psn_no"]), chr_dise=chr_["dise_codg"],
        fil_psn=_rows_of(fil["psn_no"], psn["psn_no"]), fil_dest=fil["dest_admdvs"],
        fil_type=fil["filing_type"].to_numpy(zero_copy_only=False),
        fil_status=fil["status"].to_numpy(zero_copy_only=False),
        fil_begn=_day_col(fil["begndate"]), fil_end=_day_col(fil["enddate"]),
        cat_prov=pc.cast(pc.utf8_slice_codeunits(cat["prov_admdvs"], 0, 2), pa.int64()).to_numpy(),
        cat_code=cat["med_list_codg"], cat_cap=np.where(cap_f < 0, -1, np.rint(cap_f * 1e6)).astype(np.int64),
        cat_lv=pc.cast(cat["chrgitm_lv"], pa.int64()).to_numpy(zero_copy_only=False),
        cat_selfpay_bp=np.rint(selfpay_f * 1e4).astype(np.int64),
        cat_lmt=pc.cast(pc.fill_null(cat["lmt_used_flag"], "0"), pa.int64()).to_numpy(zero_copy_only=False),
        cat_begn=_day_col(cat["begndate"]), cat_end=_day_col(cat["enddate"]),
        policies=_policy_facts(os.path.join(folder, "policies.json")),
    )


def _policy_facts(path: str) -> dict:
    """policies.json as PolicyFacts (not validated: run load_world for that)."""
    with open(path, "rb") as f:
        raw = json.loads(f.read())
    return {(p["insuplc_admdvs"], p["insutype"]): PolicyFacts(
        unfiled_refused=p["reduction"].get("unfiled") is None,
        op_requires_filing=bool(p["outpatient"].get("requires_filing", False)),
        chronic=frozenset(p.get("chronic") or ())) for p in raw}


def _versions_view(c: _Columns, codes: pa.Array) -> dict:
    """The view's ver_* fields: every catalogue entry, keyed by (province, code id, begndate)."""
    code_id = pc.fill_null(pc.index_in(c.cat_code, value_set=codes), -1).to_numpy(zero_copy_only=False)
    assert code_id.size == 0 or (int(code_id.min()) >= 0 and int(code_id.max()) < 1 << VERSION_CODE_BITS)
    assert c.cat_begn.size == 0 or int(c.cat_begn.max()) < 1 << VERSION_DAY_BITS
    key = version_key(c.cat_prov, code_id, c.cat_begn)
    o = np.argsort(key, kind="stable")
    return dict(ver_key=key[o], ver_end=c.cat_end[o], ver_lv=c.cat_lv[o], ver_selfpay_bp=c.cat_selfpay_bp[o],
                ver_cap_micro=c.cat_cap[o], ver_lmt=c.cat_lmt[o])


def _catalogue_view(cat_prov: np.ndarray, cat_code: pa.Array, cat_cap: np.ndarray) -> dict:
    """The view's catalogue fields (cat_* , codes, code_kind).

    Code ids in sorted order of the distinct codes, so that the view does not depend
    on row order; each province keeps one row per code, ordered by a national
    popularity that belongs to the world, not to the stream's seed. A code with
    several versions takes the smallest cap of them (none, -1, counting as
    smallest): again independent of row order.
    """
    enc = pc.dictionary_encode(cat_code)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    order = pc.sort_indices(enc.dictionary).to_numpy()
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    codes = pc.take(enc.dictionary, pa.array(order))
    popularity = rng_for(0, "popularity").permutation(order.size)
    pop = popularity[rank][enc.indices.to_numpy(zero_copy_only=False)]
    assert order.size < 1 << 40
    key = cat_prov << 40 | pop
    o = np.argsort(key, kind="stable")
    ks = key[o]
    first = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]]) if o.size else np.zeros(0, np.int64)
    cap_min = np.minimum.reduceat(cat_cap[o], first) if o.size else np.zeros(0, np.int64)
    o = o[first]
    cat_provs, cat_start, cat_count = np.unique(cat_prov[o], return_index=True, return_counts=True)
    code_ids = rank[enc.indices.to_numpy(zero_copy_only=False)[o]]
    head = pc.utf8_slice_codeunits(codes, 0, 1).to_numpy(zero_copy_only=False).astype(str)
    code_kind = np.where(head == "X", KIND_WESTERN, np.where(head == "Z", KIND_TCM, np.where(
        head == "C", KIND_CONSUMABLE, KIND_SERVICE))).astype(np.int8)
    return dict(
        cat_provs=cat_provs.astype(np.int64), cat_start=cat_start.astype(np.int64),
        cat_count=cat_count.astype(np.int64), cat_code_id=code_ids, cat_cap_micro=cap_min, codes=codes,
        code_kind=code_kind,
    )
