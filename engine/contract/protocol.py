"""What every implementation of the contract shares: codes, names, limits (docs/contract.md 1, 7)."""
from __future__ import annotations

import datetime as _dt
import json

# Transactions (section 7).
INFNO_PERSON = "1101"
INFNO_OP_PRE, INFNO_OP_SETTLE, INFNO_OP_REVERSE = "2206", "2207", "2208"
INFNO_IP_PRE, INFNO_IP_SETTLE, INFNO_IP_REVERSE = "2303", "2304", "2305"
INFNO_RECONCILE, INFNO_LISTING = "3201", "3202"
INFNO_SIGN_IN, INFNO_SIGN_OUT = "9001", "9002"  # section 10
# Section 11, the step-wise flow: outpatient visits, inpatient stays, 2601.
INFNO_OP_REGISTER, INFNO_OP_CANCEL, INFNO_OP_INFO, INFNO_OP_UPLOAD, INFNO_OP_REVOKE = (
    "2201", "2202", "2203", "2204", "2205")
INFNO_IP_ADMIT, INFNO_IP_DISCHARGE, INFNO_IP_CHANGE, INFNO_IP_CANCEL, INFNO_IP_UNDISCHARGE = (
    "2401", "2402", "2403", "2404", "2405")
INFNO_IP_UPLOAD, INFNO_IP_REVOKE = "2301", "2302"
INFNO_UNDO = "2601"
# Filings online (docs/contract.md, "Filings online"): 2501 转院备案 and 2502 its cancellation; the operator's
# long-term filing comes from the admin listener only (engine.hub.admin), never from a gateway.
INFNO_REFERRAL, INFNO_FILING_CANCEL = "2501", "2502"
INFNO_LONG_FILING = "admin-long-filing"
FILING_INFNOS = frozenset({INFNO_REFERRAL, INFNO_FILING_CANCEL, INFNO_LONG_FILING})
STEP_INFNOS = frozenset({
    INFNO_OP_REGISTER, INFNO_OP_CANCEL, INFNO_OP_INFO, INFNO_OP_UPLOAD, INFNO_OP_REVOKE, INFNO_IP_ADMIT,
    INFNO_IP_DISCHARGE, INFNO_IP_CHANGE, INFNO_IP_CANCEL, INFNO_IP_UNDISCHARGE, INFNO_IP_UPLOAD, INFNO_IP_REVOKE,
    INFNO_UNDO,
})
# What 2601 may undo (section 11).
UNDOABLE_INFNOS = frozenset({"2201", "2204", "2207", "2301", "2304", "2401", "2402"})

INFNOS = frozenset({
    INFNO_PERSON, INFNO_OP_PRE, INFNO_OP_SETTLE, INFNO_OP_REVERSE, INFNO_IP_PRE, INFNO_IP_SETTLE, INFNO_IP_REVERSE,
    INFNO_RECONCILE, INFNO_LISTING, INFNO_SIGN_IN, INFNO_SIGN_OUT, *STEP_INFNOS, INFNO_REFERRAL, INFNO_FILING_CANCEL,
})
SETTLE_INFNOS = frozenset({INFNO_OP_PRE, INFNO_OP_SETTLE, INFNO_IP_PRE, INFNO_IP_SETTLE})
COMMIT_INFNOS = frozenset({INFNO_OP_SETTLE, INFNO_IP_SETTLE})
REVERSE_INFNOS = frozenset({INFNO_OP_REVERSE, INFNO_IP_REVERSE})
OUTPATIENT_INFNOS = frozenset({INFNO_OP_PRE, INFNO_OP_SETTLE, INFNO_OP_REVERSE})

MED_TYPES_OUTPATIENT = frozenset({"11", "13", "14"})
MED_TYPES_INPATIENT = frozenset({"21", "24"})
MED_TYPES_EMERGENCY = frozenset({"13", "24"})
MED_TYPE_CHRONIC = "14"

CLR_TYPE_OUTPATIENT, CLR_TYPE_INPATIENT = "11", "21"

# Limits (section 1); a request outside them gets E_LIMIT.
LINES_MAX = 10_000
# Section 7 (v2): an envelope nested deeper than this anywhere (ignored fields
# included), or a date of a request outside these years, is E_SCHEMA.
ENVELOPE_DEPTH_MAX = 32
REQUEST_YEAR_MIN, REQUEST_YEAR_MAX = 2000, 2099
# The same bounds as day numbers (days since 1970-01-01, as engine.contract.money counts them).
REQUEST_DAY_MIN = (_dt.date(REQUEST_YEAR_MIN, 1, 1) - _dt.date(1970, 1, 1)).days
REQUEST_DAY_MAX = (_dt.date(REQUEST_YEAR_MAX, 12, 31) - _dt.date(1970, 1, 1)).days
PRIC_MAX_MICRO = 1_000_000 * 10**6
CNT_MAX_TEN_THOUSANDTHS = 100_000 * 10**4  # cnt is counted in 1/10,000 of a unit
LINE_AMT_MAX_FEN = 10_000_000 * 100
FRAME_BYTES_MAX = 16 * 1024 * 1024
FRAME_HEADER_BYTES = 4  # the framed TCP transport's big-endian body length (section 7)

# Error codes (section 7).
E_SCHEMA = "E_SCHEMA"
E_LIMIT = "E_LIMIT"
E_UNSUPPORTED = "E_UNSUPPORTED"
E_UNKNOWN_PERSON = "E_UNKNOWN_PERSON"
E_UNKNOWN_INSTITUTION = "E_UNKNOWN_INSTITUTION"
E_MISMATCH = "E_MISMATCH"
E_FORBIDDEN = "E_FORBIDDEN"
E_NO_POLICY = "E_NO_POLICY"
E_FILING_REQUIRED = "E_FILING_REQUIRED"
E_NO_QUALIFICATION = "E_NO_QUALIFICATION"
E_AMOUNT_MISMATCH = "E_AMOUNT_MISMATCH"
E_DATE = "E_DATE"
E_DUPLICATE_VISIT = "E_DUPLICATE_VISIT"
E_MSGID_REUSED = "E_MSGID_REUSED"
E_NOT_FOUND = "E_NOT_FOUND"
E_ALREADY_REVERSED = "E_ALREADY_REVERSED"
E_BUSY = "E_BUSY"
E_AUTH = "E_AUTH"  # section 10: not signed by a known credential
E_SIGN_IN = "E_SIGN_IN"  # section 10: no sign-in in force for this credential and institution
E_STATE = "E_STATE"  # section 11: the visit's state does not allow the transaction
E_DUPLICATE_LINE = "E_DUPLICATE_LINE"  # section 11: a feedetl_sn the visit already has
E_VOIDED = "E_VOIDED"  # section 11: the msgid was voided by a 2601 before it arrived
E_MAINTENANCE = "E_MAINTENANCE"  # section 12: the person's insured region is in a maintenance window

# Filing classes (section 4), in the tie-break order of the candidates.
LOCAL, LONG_TERM, REFERRAL, EMERGENCY, TEMP_OTHER, WAIVED, UNFILED = (
    "LOCAL", "LONG_TERM", "REFERRAL", "EMERGENCY", "TEMP_OTHER", "WAIVED", "UNFILED",
)
CANDIDATE_ORDER = (LONG_TERM, REFERRAL, EMERGENCY, TEMP_OTHER, WAIVED)
FILING_CLASS_OF_TYPE = {
    "LONG_RESETTLED": LONG_TERM,
    "LONG_RESIDENT": LONG_TERM,
    "LONG_STATIONED": LONG_TERM,
    "TEMP_REFERRAL": REFERRAL,
    "TEMP_EMERGENCY": EMERGENCY,
    "TEMP_OTHER": TEMP_OTHER,
}
TEMP_FILING_TYPES = frozenset({"TEMP_REFERRAL", "TEMP_EMERGENCY", "TEMP_OTHER"})
REDUCTION_KEY_OF_CLASS = {
    LONG_TERM: "long_term",
    REFERRAL: "referral",
    EMERGENCY: "emergency",
    TEMP_OTHER: "temp_other",
    UNFILED: "unfiled",
}

# Funds (section 6): basic, second layer, personal account.
FUND_BASIC = {"310": "310100", "390": "390100"}
FUND_SECOND = {"310": "330100", "390": "390200"}
FUND_ACCOUNT = "310200"
FUND_NAMES = {
    "310100": "职工基本医疗保险统筹基金",
    "390100": "城乡居民基本医疗保险基金",
    "330100": "职工大额医疗费用补助",
    "390200": "城乡居民大病医疗保险",
    "310200": "职工基本医疗保险个人账户",
}
FUND_NAMES_EN = {
    "310100": "employees' basic fund",
    "390100": "residents' basic fund",
    "330100": "employees' large-expense supplement",
    "390200": "residents' critical illness insurance",
    "310200": "employees' personal accounts",
}

MEMOS = ("", "NOT_IN_CATALOGUE", "CLASS_C", "LIMITED_USE")

ERR_MESSAGES = {
    E_SCHEMA: "malformed or missing field",
    E_LIMIT: "outside the limits",
    E_UNSUPPORTED: "unknown infno",
    E_UNKNOWN_PERSON: "unknown person",
    E_UNKNOWN_INSTITUTION: "unknown institution",
    E_MISMATCH: "does not match the person or the settlement",
    E_FORBIDDEN: "not allowed for this institution",
    E_NO_POLICY: "no policy for the insured region and insurance type",
    E_FILING_REQUIRED: "the insured region requires a filing for this visit",
    E_NO_QUALIFICATION: "no qualification for this chronic disease",
    E_AMOUNT_MISMATCH: "amounts do not add up",
    E_DATE: "date before the person's accounting year",
    E_DUPLICATE_VISIT: "the visit already has a settlement in force",
    E_MSGID_REUSED: "msgid already used for a different request",
    E_NOT_FOUND: "no such settlement",
    E_ALREADY_REVERSED: "settlement already reversed",
    E_BUSY: "overloaded: nothing was done, retry later",
    E_AUTH: "not signed by a known credential",
    E_SIGN_IN: "no sign-in in force: sign in again (9001)",
    E_STATE: "the visit's state does not allow this",
    E_DUPLICATE_LINE: "a fee line with this feedetl_sn was already uploaded for the visit",
    E_VOIDED: "this msgid was voided by a 2601 (冲正): nothing was done",
    E_MAINTENANCE: "the insured region's platform is down for maintenance: nothing was done, retry after the window",
}

SETLINFO_MONEY = (
    "medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
    "act_pay_dedc", "hifp_pay", "hifmi_pay", "hifob_pay", "fund_pay_sumamt", "psn_part_amt",
    "acct_pay", "psn_cash_pay", "balc", "cvlserv_pay", "hifes_pay", "maf_pay", "oth_pay",
    "hosp_part_amt",
)


def required_text(d: dict, k: str, required: bool = True) -> str | None:
    """A field of a decoded input that must be a non-empty string (E_SCHEMA), or None when absent and not
    required."""
    v = d.get(k)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise Refused(E_SCHEMA, f"{k} must be a non-empty string")
    return v


class Refused(Exception):
    """A request refused with one of the section 7 error codes; it changes nothing."""

    def __init__(self, code: str, detail: str = ""):
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)


def province(admdvs: str) -> str:
    return admdvs[:2] + "0000"


def region_covers(scope: str, admdvs: str) -> bool:
    """Section 4's "covers": a region covers itself, a code ending in 0000 its province, in 00 its city.

    A filing's destination covers the treatment region by it; so does a platform's
    credential cover an institution's region (section 10).
    """
    return (scope == admdvs
            or (scope.endswith("0000") and scope[:2] == admdvs[:2])
            or (scope.endswith("00") and scope[:4] == admdvs[:4]))


def is_retired(psn_type: str) -> bool:
    return psn_type.startswith("12") or psn_type == "1300"


def canonical(value: object) -> bytes:
    """A canonical byte form of a decoded `input`, to tell a retry from a reused msgid.

    Keys are sorted and whitespace dropped, so the same input sent as JSON over
    HTTP and as MessagePack over TCP compares equal.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# The provincial-level divisions of China (GB/T 2260): the first two digits of
# every region code -> (Chinese name, English name). The first 31 are the
# mainland's. World loading refuses any other province; reports name them.
PROVINCES = {
    "11": ("北京", "Beijing"), "12": ("天津", "Tianjin"), "13": ("河北", "Hebei"), "14": ("山西", "Shanxi"),
    "15": ("内蒙古", "Inner Mongolia"), "21": ("辽宁", "Liaoning"), "22": ("吉林", "Jilin"),
    "23": ("黑龙江", "Heilongjiang"), "31": ("上海", "Shanghai"), "32": ("江苏", "Jiangsu"),
    "33": ("浙江", "Zhejiang"), "34": ("安徽", "Anhui"), "35": ("福建", "Fujian"), "36": ("江西", "Jiangxi"),
    "37": ("山东", "Shandong"), "41": ("河南", "Henan"), "42": ("湖北", "Hubei"), "43": ("湖南", "Hunan"),
    "44": ("广东", "Guangdong"), "45": ("广西", "Guangxi"), "46": ("海南", "Hainan"), "50": ("重庆", "Chongqing"),
    "51": ("四川", "Sichuan"), "52": ("贵州", "Guizhou"), "53": ("云南", "Yunnan"), "54": ("西藏", "Tibet"),
    "61": ("陕西", "Shaanxi"), "62": ("甘肃", "Gansu"), "63": ("青海", "Qinghai"), "64": ("宁夏", "Ningxia"),
    "65": ("新疆", "Xinjiang"), "71": ("台湾", "Taiwan"), "81": ("香港", "Hong Kong"), "82": ("澳门", "Macao"),
}
MAINLAND_PROVINCES = tuple(PROVINCES)[:31]
# The same names by province code (the region code of the province itself, province()).
PROVINCE_NAMES_ZH = {code + "0000": zh for code, (zh, _) in PROVINCES.items()}
PROVINCE_NAMES_EN = {code + "0000": en for code, (_, en) in PROVINCES.items()}
