"""Loading and validating a world folder (docs/contract.md section 2).

Files are read by Arrow's multi-threaded CSV reader with every column as a
string, then validated column by column with vectorised expressions; the first
bad cell is reported as `file:line: field: what is wrong`. Validated columns are
kept as NumPy arrays (integers in fen, micro-yuan, 1/10000 units, bp, and day
numbers); the string columns stay Arrow arrays, so a world of millions of rows
never becomes millions of Python objects unless a caller asks for them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from core_ext import _columns

from engine.contract import money
from engine.contract import protocol

# A region code whose province (its first two digits) is not one of GB/T 2260's is refused at load.
PROVINCES = frozenset(protocol.PROVINCES)

FILING_TYPES = (
    "LONG_RESETTLED",
    "LONG_RESIDENT",
    "LONG_STATIONED",
    "TEMP_REFERRAL",
    "TEMP_EMERGENCY",
    "TEMP_OTHER",
)
INSUTYPES = ("310", "390")

DAY_OPEN = 2**31 - 1  # an absent end date: open

COLUMNS = {
    "institutions.csv": ["fixmedins_code", "fixmedins_name", "admdvs", "hosp_lv"],
    "catalogue.csv": [
        "prov_admdvs", "med_list_codg", "med_list_name", "chrgitm_lv", "selfpay_prop",
        "pric_uplmt_amt", "lmt_used_flag", "begndate", "enddate",
    ],
    "persons.csv": [
        "psn_no", "certno", "psn_name", "insuplc_admdvs", "insutype", "psn_type", "balc",
        "acc_year", "hifp_ip", "hifp_op", "ded_op", "burden2", "second_paid",
    ],
    "chronic.csv": ["psn_no", "dise_codg", "hifp_cd"],
    "filings.csv": ["psn_no", "filing_type", "dest_admdvs", "begndate", "enddate", "status"],
    "prepay.csv": ["prov_admdvs", "amount"],
}

# Upper bounds on what a world may hold, checked at load (TigerStyle: a limit on everything).
MONEY_DIGITS_MAX = 13  # integer digits of any amount in a world file: < 10**13 yuan
TIERS_MAX = 16


class WorldError(Exception):
    """A world file that breaks the spec: names file, line and field."""

    def __init__(self, file: str, line: int | None, field: str | None, what: str):
        self.file, self.line, self.field, self.what = file, line, field, what
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {field}: {what}" if field else f"{where}: {what}")


# ---------------------------------------------------------------- policies


@dataclass(frozen=True)
class Tier:
    upper_fen: int | None  # None: no bound
    ratio_bp: int


@dataclass(frozen=True)
class Policy:
    """One pooling region's policy for one insurance type (section 5), all in integers."""

    insuplc_admdvs: str
    insutype: str
    annual_cap_fen: int
    ip_deductible_fen: dict[int, int]
    ip_tiers: dict[int, tuple[Tier, ...]]
    ip_retiree_bonus_bp: int
    op_annual_deductible_fen: int
    op_ratio_bp: dict[int, int]
    op_annual_cap_fen: int
    op_retiree_bonus_bp: int
    op_requires_filing: bool
    chronic: dict[str, tuple[int, int]]  # dise_codg -> (ratio_bp, annual_cap_fen)
    sl_threshold_fen: int
    sl_tiers: tuple[Tier, ...]
    sl_annual_cap_fen: int
    reduction_bp: dict[str, int | None]  # long_term, referral, emergency, temp_other, unfiled


REDUCTION_KEYS = ("long_term", "referral", "emergency", "temp_other", "unfiled")
# The 2022 national notice: at most 10 points for referral and emergency, 20 for other temporary.
REDUCTION_MAX_BP = {"referral": 1000, "emergency": 1000, "temp_other": 2000}


def _parse_policies(path: str) -> list[Policy]:
    fname = "policies.json"
    try:
        with open(path, "rb") as f:
            raw = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise WorldError(fname, None, None, f"not readable JSON: {e}") from None
    if not isinstance(raw, list):
        raise WorldError(fname, None, None, "must be a list of policy objects")
    out: list[Policy] = []
    seen: set[tuple[str, str]] = set()
    for i, obj in enumerate(raw):
        out.append(_PolicyReader(fname, i, obj).policy(seen))
    return out


class _PolicyReader:
    """One object of policies.json read into a Policy; every failure names the file and the field."""

    def __init__(self, fname: str, i: int, obj: object):
        self.fname, self.obj = fname, obj
        self.where = f"policy[{i}]"

    def fail(self, fld: str, what: str) -> WorldError:
        return WorldError(self.fname, None, f"{self.where}.{fld}", what)

    def get(self, d: object, *keys: str) -> object:
        cur = d
        for k in keys:
            if not isinstance(cur, dict) or k not in cur:
                raise self.fail(".".join(keys), "missing")
            cur = cur[k]
        return cur

    def amount_fen(self, *keys: str) -> int:
        v = self.get(self.obj, *keys)
        try:
            n = money.parse_fen(v)
        except money.NumberError as e:
            raise self.fail(".".join(keys), str(e)) from None
        if n < 0 or n >= 10**MONEY_DIGITS_MAX * 100:
            raise self.fail(".".join(keys), f"out of range: {v!r}")
        return n

    def ratio_bp(self, v: object, fld: str) -> int:
        try:
            n = money.parse_bp(v)
        except money.NumberError as e:
            raise self.fail(fld, str(e)) from None
        if not 0 <= n <= money.BP_ONE:
            raise self.fail(fld, f"ratio outside [0, 1]: {v!r}")
        return n

    def tiers(self, v: object, fld: str) -> tuple[Tier, ...]:
        if not isinstance(v, list) or not 1 <= len(v) <= TIERS_MAX:
            raise self.fail(fld, f"must be a list of 1 to {TIERS_MAX} [upper, ratio] pairs")
        res: list[Tier] = []
        prev_fen = -1
        for j, t in enumerate(v):
            if not isinstance(t, list) or len(t) != 2:
                raise self.fail(f"{fld}[{j}]", "must be an [upper, ratio] pair")
            up, r = t
            last = j == len(v) - 1
            if up is None:
                if not last:
                    raise self.fail(f"{fld}[{j}]", "only the last tier may have no upper bound")
                upper_fen = None
            else:
                if last:
                    raise self.fail(f"{fld}[{j}]", "the last tier's upper must be null")
                try:
                    upper_fen = money.parse_fen(up)
                except money.NumberError as e:
                    raise self.fail(f"{fld}[{j}]", str(e)) from None
                if upper_fen <= prev_fen or upper_fen >= 10**MONEY_DIGITS_MAX * 100:
                    raise self.fail(f"{fld}[{j}]", "uppers must rise strictly")
                prev_fen = upper_fen
            res.append(Tier(upper_fen, self.ratio_bp(r, f"{fld}[{j}]")))
        return tuple(res)

    def by_level(self, d: object, fld: str) -> dict[int, object]:
        if not isinstance(d, dict) or set(d) != {"1", "2", "3"}:
            raise self.fail(fld, "must have exactly the hospital levels '1', '2', '3'")
        return {int(k): v for k, v in d.items()}

    def key(self, seen: set[tuple[str, str]]) -> tuple[str, str]:
        """(insuplc_admdvs, insutype), valid and not seen before."""
        if not isinstance(self.obj, dict):
            raise WorldError(self.fname, None, self.where, "must be an object")
        insuplc = self.get(self.obj, "insuplc_admdvs")
        if not (isinstance(insuplc, str) and len(insuplc) == 6 and insuplc.isdigit()):
            raise self.fail("insuplc_admdvs", f"not a region code: {insuplc!r}")
        if insuplc[:2] not in PROVINCES:
            raise self.fail("insuplc_admdvs", f"unknown province: {insuplc!r}")
        insutype = self.get(self.obj, "insutype")
        if insutype not in INSUTYPES:
            raise self.fail("insutype", f"must be 310 or 390: {insutype!r}")
        if (insuplc, insutype) in seen:
            raise self.fail("insuplc_admdvs", f"duplicate policy for {insuplc}/{insutype}")
        seen.add((insuplc, insutype))
        return insuplc, insutype

    def ip_deductible_fen(self) -> dict[int, int]:
        ded = self.by_level(self.get(self.obj, "inpatient", "deductible"), "inpatient.deductible")
        out = {}
        for lv, v in ded.items():
            try:
                n = money.parse_fen(v)
            except money.NumberError as e:
                raise self.fail(f"inpatient.deductible.{lv}", str(e)) from None
            if n < 0:
                raise self.fail(f"inpatient.deductible.{lv}", "negative")
            out[lv] = n
        return out

    def chronic(self) -> dict[str, tuple[int, int]]:
        """disease -> (ratio_bp, annual_cap_fen)."""
        chronic_raw = self.get(self.obj, "chronic")
        if not isinstance(chronic_raw, dict):
            raise self.fail("chronic", "must be an object of diseases")
        chronic = {}
        for dise, c in chronic_raw.items():
            if not isinstance(dise, str) or not dise:
                raise self.fail("chronic", f"bad disease code {dise!r}")
            chronic[dise] = (
                self.ratio_bp(self.get(c, "ratio"), f"chronic.{dise}.ratio"),
                self.amount_fen("chronic", dise, "annual_cap"),
            )
        return chronic

    def reduction_bp(self) -> dict[str, int | None]:
        """Each filing class's reduction, within the national limits (unfiled: None, refused)."""
        red_raw = self.get(self.obj, "reduction")
        if not isinstance(red_raw, dict):
            raise self.fail("reduction", "must be an object")
        reduction: dict[str, int | None] = {}
        for k in REDUCTION_KEYS:
            v = self.get(red_raw, k)
            if v is None and k == "unfiled":
                reduction[k] = None
                continue
            n = self.ratio_bp(v, f"reduction.{k}")
            if k in REDUCTION_MAX_BP and n > REDUCTION_MAX_BP[k]:
                raise self.fail(
                    f"reduction.{k}",
                    f"{v} exceeds the national limit {money.format_bp(REDUCTION_MAX_BP[k])}",
                )
            reduction[k] = n
        return reduction

    def policy(self, seen: set[tuple[str, str]]) -> Policy:
        """The whole policy, its parts checked in the file's order."""
        insuplc, insutype = self.key(seen)
        self.where = f"{self.where} {insuplc}/{insutype}"
        obj, get, ratio_bp = self.obj, self.get, self.ratio_bp
        ip_ded = self.ip_deductible_fen()
        ip_tiers = {
            lv: self.tiers(v, f"inpatient.tiers.{lv}")
            for lv, v in self.by_level(get(obj, "inpatient", "tiers"), "inpatient.tiers").items()
        }
        op_ratio = {
            lv: ratio_bp(v, f"outpatient.ratio.{lv}")
            for lv, v in self.by_level(get(obj, "outpatient", "ratio"), "outpatient.ratio").items()
        }
        rf = get(obj, "outpatient", "requires_filing")
        if not isinstance(rf, bool):
            raise self.fail("outpatient.requires_filing", "must be true or false")
        chronic = self.chronic()
        reduction = self.reduction_bp()
        return Policy(
            insuplc_admdvs=insuplc,
            insutype=insutype,
            annual_cap_fen=self.amount_fen("annual_cap"),
            ip_deductible_fen=ip_ded,
            ip_tiers=ip_tiers,
            ip_retiree_bonus_bp=ratio_bp(get(obj, "inpatient", "retiree_bonus"), "inpatient.retiree_bonus"),
            op_annual_deductible_fen=self.amount_fen("outpatient", "annual_deductible"),
            op_ratio_bp=op_ratio,
            op_annual_cap_fen=self.amount_fen("outpatient", "annual_cap"),
            op_retiree_bonus_bp=ratio_bp(get(obj, "outpatient", "retiree_bonus"), "outpatient.retiree_bonus"),
            op_requires_filing=rf,
            chronic=chronic,
            sl_threshold_fen=self.amount_fen("second_layer", "threshold"),
            sl_tiers=self.tiers(get(obj, "second_layer", "tiers"), "second_layer.tiers"),
            sl_annual_cap_fen=self.amount_fen("second_layer", "annual_cap"),
            reduction_bp=reduction,
        )


# ---------------------------------------------------------------- CSV columns


def _string_buffers(a: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """int64 offsets and the bytes of an Arrow string array (offset 0)."""
    if a.offset:
        a = pa.concat_arrays([a])
    _, offs, data = a.buffers()
    offsets = np.frombuffer(offs, dtype=np.int32, count=len(a) + 1).astype(np.int64)
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
    return offsets, raw


class _Csv:
    """One CSV file read as strings, with validators that name the first bad cell."""

    def __init__(self, folder: str, name: str):
        self.name = name
        path = os.path.join(folder, name)
        cols = COLUMNS[name]
        try:
            with open(path, "rb") as f:
                header = f.readline().decode("utf-8-sig").rstrip("\r\n").split(",")
        except OSError as e:
            raise WorldError(name, None, None, f"cannot read: {e.strerror}") from None
        except UnicodeDecodeError:
            raise WorldError(name, 1, None, "header is not UTF-8") from None
        for c in cols:
            if c not in header:
                raise WorldError(name, 1, c, "missing column")
        try:
            self.t = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
                parse_options=pacsv.ParseOptions(newlines_in_values=False),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in header},
                    include_columns=cols,
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            # Arrow names the row in its message ("Row #12: ..."); keep it whole.
            raise WorldError(name, None, None, f"not valid CSV: {e}") from None
        self.n = self.t.num_rows

    def col(self, c: str) -> pa.Array:
        return self.t.column(c).combine_chunks()

    def buffers(self, c: str) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
        """A string column and its Arrow buffers: int64 offsets, bytes, validity bitmap."""
        a = self.col(c)
        if a.offset:
            a = pa.concat_arrays([a])  # a fresh array at offset 0
        offsets, raw = _string_buffers(a)
        validity = a.buffers()[0]
        valid = np.frombuffer(validity, dtype=np.uint8) if validity is not None else np.zeros(0, np.uint8)
        return a, offsets, raw, valid

    def fail_at(self, mask_bad: np.ndarray | pa.Array, c: str, what: str) -> None:
        """Raise for the first row where mask_bad holds, if any."""
        if isinstance(mask_bad, (pa.Array, pa.ChunkedArray)):
            mask_bad = mask_bad.to_numpy(zero_copy_only=False)
        idx = np.flatnonzero(mask_bad)
        if idx.size:
            self.fail_row(int(idx[0]), c, what)

    def fail_row(self, i: int, c: str, what: str) -> None:
        if i >= 0:
            v = self.t.column(c)[i].as_py()
            raise WorldError(self.name, i + 2, c, f"{what}: {v!r}")

    def required(self, c: str) -> pa.Array:
        a = self.col(c)
        if a.null_count:
            self.fail_at(pc.is_null(a), c, "missing value")
        return a

    def token(self, c: str, len_max: int, what: str) -> pa.Array:
        """Codes: 1..len_max printable ASCII characters, no spaces."""
        a, offsets, data, valid = self.buffers(c)
        self.fail_row(_columns.check_token_column(offsets, data, valid, len_max), c, what)
        return a

    def matches(self, c: str, pattern: str, what: str, optional: bool = False) -> pa.Array:
        a = self.col(c) if optional else self.required(c)
        # Few distinct values in the columns this is used for: test those, then find the row.
        values = pc.unique(a)
        ok = pc.match_substring_regex(values, pattern)
        bad_values = values.filter(pc.invert(pc.fill_null(ok, True)))
        if len(bad_values):
            self.fail_at(pc.is_in(a, value_set=bad_values), c, what)
        return a

    def region(self, c: str) -> pa.Array:
        a = self.matches(c, r"^[0-9]{6}$", "not a 6-digit region code")
        values = pc.unique(a)
        bad = [v for v in values.to_pylist() if v is not None and v[:2] not in PROVINCES]
        if bad:
            self.fail_at(pc.is_in(a, value_set=pa.array(bad)), c, "unknown province")
        return a

    def province(self, c: str) -> pa.Array:
        a = self.region(c)
        bad = [v for v in pc.unique(a).to_pylist() if v is not None and not v.endswith("0000")]
        if bad:
            self.fail_at(pc.is_in(a, value_set=pa.array(bad)), c, "not a province code (xx0000)")
        return a

    def scaled(self, c: str, places: int, optional: bool = False, what: str = "") -> np.ndarray:
        """A decimal column as int64 scaled by 10**places; absent cells give -1."""
        a, offsets, data, valid = self.buffers(c)
        out = np.empty(len(a), np.int64)
        bad = _columns.parse_decimal_column(offsets, data, valid, places, MONEY_DIGITS_MAX, optional, out)
        if bad >= 0 and a[bad].as_py() is None:
            self.fail_row(bad, c, "missing value")
        self.fail_row(bad, c, what or f"not a non-negative decimal with at most {places} places")
        return out

    def ratio(self, c: str, optional: bool = False) -> np.ndarray:
        v = self.scaled(c, money.BP_PLACES, optional, "not a ratio with at most 4 places")
        self.fail_at(v > money.BP_ONE, c, "ratio above 1")
        return v

    def day(self, c: str, optional: bool = False) -> np.ndarray:
        """A date column as day numbers (days since 1970-01-01); absent gives DAY_OPEN."""
        a, offsets, data, valid = self.buffers(c)
        out = np.empty(len(a), np.int32)
        bad = _columns.parse_date_column(offsets, data, valid, optional, DAY_OPEN, out)
        if bad >= 0 and a[bad].as_py() is None:
            self.fail_row(bad, c, "missing value")
        self.fail_row(bad, c, "not a date YYYY-MM-DD")
        return out

    def choice(self, c: str, values: tuple[str, ...], optional_default: str | None = None) -> pa.Array:
        a = self.col(c)
        if optional_default is not None:
            a = pc.fill_null(a, optional_default)
        elif a.null_count:
            self.fail_at(pc.is_null(a), c, "missing value")
        bad = [v for v in pc.unique(a).to_pylist() if v not in values]
        if bad:
            self.fail_at(pc.is_in(a, value_set=pa.array(bad, pa.string())), c, f"must be one of {values}")
        return a

    def unique(self, cols: list[str], what: str) -> None:
        keys = [self.col(c) for c in cols]
        key = keys[0] if len(keys) == 1 else pc.binary_join_element_wise(*keys, "\x1f")
        if len(pc.unique(key)) == self.n:
            return
        _, first = np.unique(key.to_numpy(zero_copy_only=False), return_index=True)
        dup = np.ones(self.n, dtype=bool)
        dup[first] = False
        self.fail_at(dup, cols[0], what)


# ---------------------------------------------------------------- the world


@dataclass
class World:
    """A validated world. Columns are parallel arrays; strings are Arrow arrays."""

    folder: str
    # institutions
    inst_code: list[str]
    inst_name: list[str]
    inst_admdvs: list[str]
    inst_lv: np.ndarray  # int8, 1..3
    # catalogue, sorted by (prov, code, begndate)
    cat_prov: np.ndarray  # int16: the province's first two digits (44 for 440000)
    cat_code: pa.Array  # string
    cat_lv: np.ndarray  # int8: 1 A, 2 B, 3 C
    cat_selfpay_bp: np.ndarray  # int32, 0 when absent
    cat_cap_micro: np.ndarray  # int64, -1 when absent
    cat_lmt: np.ndarray  # int8, 1 inpatient use only
    cat_begn: np.ndarray  # int32 day
    cat_end: np.ndarray  # int32 day, DAY_OPEN when absent
    # persons
    psn_no: pa.Array
    psn_certno: pa.Array
    psn_name: pa.Array
    psn_insuplc: pa.Array
    psn_insutype: pa.Array
    psn_type: pa.Array
    psn_balc: np.ndarray  # int64 fen
    psn_acc_year: np.ndarray  # int32
    psn_hifp_ip: np.ndarray
    psn_hifp_op: np.ndarray
    psn_ded_op: np.ndarray
    psn_burden2: np.ndarray
    psn_second_paid: np.ndarray
    # chronic qualifications
    chr_psn: np.ndarray  # int32 person row
    chr_dise: list[str]
    chr_hifp_cd: np.ndarray  # int64 fen
    # filings
    fil_psn: np.ndarray  # int32 person row
    fil_type: list[str]
    fil_dest: list[str]
    fil_begn: np.ndarray  # int32 day
    fil_end: np.ndarray  # int32 day or DAY_OPEN
    fil_status: list[str]
    # pre-payment by province code
    prepay_fen: dict[str, int]
    policies: list[Policy]
    load_s: float = 0.0

    @property
    def n_persons(self) -> int:
        return len(self.psn_no)

    def policy_map(self) -> dict[tuple[str, str], Policy]:
        return {(p.insuplc_admdvs, p.insutype): p for p in self.policies}


def load_world(folder: str) -> World:
    """Load and validate every file of a world folder, or raise WorldError."""
    import time

    t0 = time.perf_counter()
    if not os.path.isdir(folder):
        raise WorldError(folder, None, None, "not a folder")
    inst = _load_institutions(folder)
    cat = _load_catalogue(folder)
    psn = _load_persons(folder)
    psn_no = psn["psn_no"]
    chronic = _load_chronic(folder, psn_no)
    filings = _load_filings(folder, psn_no)
    prepay = _load_prepay(folder)
    policies = _parse_policies(os.path.join(folder, "policies.json"))
    w = World(
        folder=folder, **inst, **cat, **psn, **chronic, **filings, prepay_fen=prepay,
        policies=policies,
    )
    w.load_s = time.perf_counter() - t0
    return w


def _load_institutions(folder: str) -> dict:
    """institutions.csv as World's inst_* columns."""
    f = _Csv(folder, "institutions.csv")
    f.token("fixmedins_code", 64, "not an institution code")
    f.unique(["fixmedins_code"], "duplicate institution")
    f.required("fixmedins_name")
    inst_adm = f.region("admdvs")
    lv = f.choice("hosp_lv", ("1", "2", "3"))
    inst = dict(
        inst_code=f.col("fixmedins_code").to_pylist(),
        inst_name=f.col("fixmedins_name").to_pylist(),
        inst_admdvs=inst_adm.to_pylist(),
        inst_lv=pc.cast(lv, pa.int8()).to_numpy().astype(np.int8),
    )
    return inst


def _load_catalogue(folder: str) -> dict:
    """catalogue.csv as World's cat_* columns, sorted by (province, code, begndate) when it was not,
    each code's date ranges disjoint."""
    f = _Csv(folder, "catalogue.csv")
    prov = f.province("prov_admdvs")
    code = f.token("med_list_codg", 50, "not a catalogue code")
    f.required("med_list_name")
    clv = f.choice("chrgitm_lv", ("01", "02", "03"))
    selfpay = f.ratio("selfpay_prop", optional=True)
    cap = f.scaled("pric_uplmt_amt", money.MICRO_PLACES, optional=True)
    lmt = f.choice("lmt_used_flag", ("0", "1"), optional_default="0")
    begn = f.day("begndate")
    end = f.day("enddate", optional=True)
    f.fail_at(end < begn, "enddate", "ends before begndate")
    # The province's first two digits, through the (few) distinct codes.
    enc = pc.dictionary_encode(prov)
    prov2 = np.array([int(v[:2]) for v in enc.dictionary.to_pylist()], np.int16)
    nums = {
        "prov": prov2[enc.indices.to_numpy(zero_copy_only=False)] if f.n else np.zeros(0, np.int16),
        "lv": pc.cast(clv, pa.int8()).to_numpy(zero_copy_only=False).astype(np.int8),
        "selfpay": np.where(selfpay < 0, 0, selfpay).astype(np.int32),
        "cap": cap,
        "lmt": pc.cast(lmt, pa.int8()).to_numpy(zero_copy_only=False).astype(np.int8),
        "begn": begn,
        "end": end,
    }
    rows = None  # file row of each sorted row, when a sort was needed
    offsets, data = _string_buffers(code)
    if _columns.catalogue_order(nums["prov"], offsets, data, nums["begn"]) >= 0:
        # Not sorted by (province, code, begndate). The index needs only each
        # (province, code)'s versions together and in date order, not codes in
        # lexicographic order: sort integer keys (the code's dictionary index),
        # which is several times faster than sorting the strings. A catalogue
        # exported sorted, as national catalogues are, skips this entirely.
        code_id = pc.dictionary_encode(code).indices.to_numpy(zero_copy_only=False)
        rows = np.lexsort((nums["begn"], code_id, nums["prov"]))
        nums = {k: v[rows] for k, v in nums.items()}
        code = code.take(pa.array(rows))
        offsets, data = _string_buffers(code)
    hit = _columns.catalogue_overlap(nums["prov"], offsets, data, nums["begn"], nums["end"])
    if hit >= 0:
        raise WorldError(
            "catalogue.csv", (hit if rows is None else int(rows[hit])) + 2, "begndate",
            f"date range overlaps another entry of {code[hit].as_py()!r}",
        )
    cat = dict(
        cat_prov=nums["prov"], cat_code=code, cat_lv=nums["lv"],
        cat_selfpay_bp=nums["selfpay"], cat_cap_micro=nums["cap"], cat_lmt=nums["lmt"],
        cat_begn=nums["begn"], cat_end=nums["end"],
    )
    return cat


def _load_persons(folder: str) -> dict:
    """persons.csv as World's psn_* columns (money in fen)."""
    f = _Csv(folder, "persons.csv")
    psn_no = f.token("psn_no", 64, "not a person number")
    f.unique(["psn_no"], "duplicate person")
    f.required("certno")
    f.required("psn_name")
    f.region("insuplc_admdvs")
    f.choice("insutype", INSUTYPES)
    f.required("psn_type")
    acc_year = f.matches("acc_year", r"^[0-9]{4}$", "not a year")
    psn = dict(
        psn_no=psn_no,
        psn_certno=f.col("certno"),
        psn_name=f.col("psn_name"),
        psn_insuplc=f.col("insuplc_admdvs"),
        psn_insutype=f.col("insutype"),
        psn_type=f.col("psn_type"),
        psn_balc=f.scaled("balc", 2),
        psn_acc_year=pc.cast(acc_year, pa.int32()).to_numpy().astype(np.int32),
        psn_hifp_ip=f.scaled("hifp_ip", 2),
        psn_hifp_op=f.scaled("hifp_op", 2),
        psn_ded_op=f.scaled("ded_op", 2),
        psn_burden2=f.scaled("burden2", 2),
        psn_second_paid=f.scaled("second_paid", 2),
    )
    return psn


def _person_rows(f: _Csv, psn_no: pa.Array) -> np.ndarray:
    """The person row of each row of `f` (by its psn_no); an unknown person fails."""
    idx = pc.index_in(f.required("psn_no"), value_set=psn_no)
    rows = pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int32)
    f.fail_at(rows < 0, "psn_no", "unknown person")
    return rows


def _load_chronic(folder: str, psn_no: pa.Array) -> dict:
    """chronic.csv as World's chr_* columns."""
    f = _Csv(folder, "chronic.csv")
    chr_psn = _person_rows(f, psn_no)
    f.token("dise_codg", 32, "not a disease code")
    f.unique(["psn_no", "dise_codg"], "duplicate qualification")
    chronic = dict(
        chr_psn=chr_psn, chr_dise=f.col("dise_codg").to_pylist(), chr_hifp_cd=f.scaled("hifp_cd", 2)
    )
    return chronic


def _load_filings(folder: str, psn_no: pa.Array) -> dict:
    """filings.csv as World's fil_* columns."""
    f = _Csv(folder, "filings.csv")
    fil_psn = _person_rows(f, psn_no)
    ftype = f.choice("filing_type", FILING_TYPES)
    dest = f.region("dest_admdvs")
    fb = f.day("begndate")
    fe = f.day("enddate", optional=True)
    f.fail_at(fe < fb, "enddate", "ends before begndate")
    status = f.choice("status", ("1", "2"))
    filings = dict(
        fil_psn=fil_psn,
        fil_type=ftype.to_pylist(),
        fil_dest=dest.to_pylist(),
        fil_begn=fb,
        fil_end=fe,
        fil_status=status.to_pylist(),
    )
    return filings


def _load_prepay(folder: str) -> dict[str, int]:
    """prepay.csv: province -> pre-payment amount (fen)."""
    f = _Csv(folder, "prepay.csv")
    pprov = f.province("prov_admdvs")
    f.unique(["prov_admdvs"], "duplicate province")
    amt = f.scaled("amount", 2)
    prepay = dict(zip(pprov.to_pylist(), (int(x) for x in amt)))
    return prepay
